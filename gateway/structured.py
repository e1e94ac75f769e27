"""Structured answers: the JSON schema the LLM server must follow, and reading its replies.

The schema goes out as OpenAI's ``response_format`` (``{"type": "json_schema", ...}``),
which llama.cpp's server turns into a grammar and vLLM enforces with its structured-output
backend; either way every token the model emits keeps the reply inside the schema:

- ``reasoning``: a string of at most ``reasoning_chars`` characters (a rambling model is
  stopped by the grammar, not by ``max_tokens``);
- ``answer`` (or ``choice``, one of the option letters, for multiple choice);
- ``citations``: source numbers, each one of the numbers in the prompt (the grammar allows
  no other), at least one when ``require_citation``.

Fields are generated in that order, so the reasoning streams first and the answer after it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.prompting import ParsedAnswer, find_citations, read_choice
from gateway.streaming import JsonFieldStreamer

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
STREAMED_FIELDS = {"reasoning": "reasoning", "answer": "content"}


@dataclass(frozen=True)
class SchemaLimits:
    """Bounds the schema puts on a reply.

    Attributes:
        reasoning_chars: most characters of reasoning (0: no reasoning field).
        answer_chars: most characters of the answer.
        require_citation: with sources, the reply must cite at least one.
    """

    reasoning_chars: int = 400
    answer_chars: int = 600
    require_citation: bool = True


def answer_schema(
    source_numbers: Collection[int], *, choices: int = 0, limits: SchemaLimits | None = None
) -> dict[str, Any]:
    """The JSON schema of a reply over these sources.

    Args:
        source_numbers: the numbers of the sources in the prompt (none: no ``citations`` field).
        choices: the number of options of a multiple-choice question (0: free-form answer).
        limits: length and citation bounds.

    Raises:
        ValueError: more than 26 choices.
    """
    limits = limits or SchemaLimits()
    if choices > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} choices")
    properties: dict[str, Any] = {}
    if limits.reasoning_chars > 0:
        properties["reasoning"] = {"type": "string", "maxLength": limits.reasoning_chars}
    if choices:
        properties["choice"] = {"type": "string", "enum": list(LETTERS[:choices])}
    else:
        properties["answer"] = {"type": "string", "minLength": 1, "maxLength": limits.answer_chars}
    numbers = sorted(set(source_numbers))
    if numbers:
        properties["citations"] = {
            "type": "array",
            "items": {"type": "integer", "enum": numbers},
            "minItems": 1 if limits.require_citation else 0,
            "maxItems": len(numbers),
        }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` request field carrying ``schema`` (OpenAI, vLLM and llama.cpp accept it)."""
    return {"type": "json_schema", "json_schema": {"name": "grounded_answer", "strict": True, "schema": schema}}


@dataclass(frozen=True)
class StructuredReply:
    """A structured reply as read.

    Attributes:
        parsed: reasoning, answer, citations and choice.
        well_formed: the reply was one complete JSON object with every required field.
    """

    parsed: ParsedAnswer
    well_formed: bool


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _listed_citations(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    return [n for n in value if isinstance(n, int) and not isinstance(n, bool)]


def read_structured(
    raw: str,
    *,
    source_numbers: Collection[int],
    choices: Sequence[str] | None = None,
    streamer: JsonFieldStreamer | None = None,
    reasoning_content: str | None = None,
    reasoning: bool = True,
) -> StructuredReply:
    """Read a structured reply, complete or cut short.

    Citations are those listed in ``citations`` and those written ``[n]`` in the answer,
    valid ones in order of first appearance; other numbers are reported as invalid. A reply
    that is not complete JSON (stopped by the loop guard or ``max_tokens``, or a server that
    ignored the schema) is read as far as it goes, from ``streamer`` when the caller already
    fed it the text; it is then not well-formed.

    Args:
        raw: the reply's content.
        source_numbers: the numbers of the sources in the prompt.
        choices: the options of a multiple-choice question.
        streamer: a streamer already fed ``raw`` (one is made when None).
        reasoning_content: the server's separate reasoning field, if any.
        reasoning: whether the schema asked for a ``reasoning`` field.
    """
    valid = set(source_numbers)
    data: Any = None
    with contextlib.suppress(ValueError):
        data = json.loads(raw)
    fields: dict[str, Any]
    if isinstance(data, dict):
        fields = data
    else:
        if streamer is None:
            streamer = JsonFieldStreamer(STREAMED_FIELDS)
            streamer.feed(raw)
        fields = {
            name: text for name in ("reasoning", "answer", "choice") if (text := streamer.field(name)) is not None
        }
    reasoning_text = _string(fields.get("reasoning"))
    answer = _string(fields.get("answer"))
    listed = _listed_citations(fields.get("citations"))
    inline, inline_invalid = find_citations(answer, valid)
    citations = dict.fromkeys([*inline, *(n for n in listed if n in valid)])
    invalid = dict.fromkeys([*inline_invalid, *(n for n in listed if n not in valid)])
    choice: str | None = None
    if choices:
        letter = fields.get("choice")
        choice = letter if isinstance(letter, str) and letter in LETTERS[: len(choices)] else None
        if choice is None and answer:
            choice = read_choice(answer, False, choices)
        if choice is not None and not answer:
            answer = f"{choice}. {' '.join(choices[LETTERS.index(choice)].split())}"
    required = {"choice" if choices else "answer"} | ({"citations"} if valid else set())
    required |= {"reasoning"} if reasoning else set()
    well_formed = isinstance(data, dict) and required <= data.keys() and bool(answer.strip())
    if choices:
        well_formed = well_formed and choice is not None
    if reasoning_content:
        reasoning_text = f"{reasoning_content.strip()}\n\n{reasoning_text}".strip()
    parsed = ParsedAnswer(
        reasoning=reasoning_text.strip(),
        answer=answer.strip(),
        citations=tuple(citations),
        invalid_citations=tuple(invalid),
        choice=choice,
        choice_parsed=choice is not None,
    )
    return StructuredReply(parsed=parsed, well_formed=well_formed)
