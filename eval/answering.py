"""How the harness has the LLM answer: generation settings per answer format and question kind, and answer rows.

Two answer formats are compared on the same retrieval:

* ``structured`` — the gateway's default: a JSON schema the server enforces, anti-repetition
  sampling and the loop guard (every generation setting at its ``LLMEndpointSettings`` default);
* ``free`` — the generation the gateway had before: the ``<think>`` / ``Answer:`` prompt,
  ``repetition_penalty`` 1 and no DRY (the llama.cpp server's own defaults, which the old
  requests left in place), no loop guard. The baseline of every before/after figure.

Multiple-choice and code answers use the structured default with the reasoning bounded so
that what matters (the choice, the code) fits in the question kind's ``max_tokens``.
"""

from __future__ import annotations

from typing import Any, Literal

from federation.config import LLMEndpointSettings
from gateway.protocol import AskResponse

__all__ = [
    "ANSWER_FORMATS",
    "AnswerFormat",
    "answer_fields",
    "format_settings",
    "kind_settings",
    "parse_formats",
    "reasoning_room",
]

AnswerFormat = Literal["structured", "free"]
ANSWER_FORMATS: tuple[AnswerFormat, ...] = ("structured", "free")

_GENERATION_FIELDS = (
    "answer_format", "repetition_penalty", "frequency_penalty", "dry_multiplier", "loop_guard", "reasoning_chars",
    "answer_chars",
)  # fmt: skip
_OLD_GENERATION = {
    "answer_format": "free",
    "repetition_penalty": 1.0,
    "frequency_penalty": 0.0,
    "dry_multiplier": 0.0,
    "loop_guard": False,
}
# A structured multiple-choice reply after its reasoning: `", "choice": "B", "citations": [1, 2]}` and the
# JSON around the reasoning, with room to spare.
MC_RESERVED_TOKENS = 32
# Fewest characters per token of SmolLM2's (and similar BPE) tokenizers on English and medical text:
# reasoning of 3 characters per token left fits.
CHARS_PER_TOKEN = 3
REASONING_LOG_CHARS = 600


def parse_formats(spec: str) -> tuple[AnswerFormat, ...]:
    """The answer formats of a comma list (``"structured,free"``), in its order, each once.

    Raises:
        ValueError: an unknown format.
    """
    formats: list[AnswerFormat] = []
    for name in (part.strip() for part in spec.split(",")):
        known = next((f for f in ANSWER_FORMATS if f == name), None)
        if name and known is None:
            raise ValueError(f"unknown answer format '{name}': choose from {', '.join(ANSWER_FORMATS)}")
        if known is not None and known not in formats:
            formats.append(known)
    return tuple(formats)


def format_settings(base: LLMEndpointSettings, answer_format: AnswerFormat) -> LLMEndpointSettings:
    """``base`` generating in ``answer_format``: ``free`` as the old gateway, ``structured`` at the new defaults."""
    if answer_format == "free":
        return base.model_copy(update=_OLD_GENERATION)
    defaults = {name: LLMEndpointSettings.model_fields[name].default for name in _GENERATION_FIELDS}
    return base.model_copy(update={**defaults, "answer_format": "structured"})


def reasoning_room(max_tokens: int, reserved_tokens: int, *, most: int) -> int:
    """Reasoning characters that leave ``reserved_tokens`` free: ``3 × (max_tokens - reserved)``, at most ``most``."""
    return max(0, min(most, (max_tokens - reserved_tokens) * CHARS_PER_TOKEN))


def kind_settings(base: LLMEndpointSettings, kind: str, max_tokens: int) -> LLMEndpointSettings:
    """Structured settings for multiple-choice (``mc``) or ``code`` answers of at most ``max_tokens``.

    Multiple choice: the reasoning gets what the choice and citations leave (``mc`` with 96
    tokens: 192 characters), so the letter is never cut off. Code: the reasoning gets a quarter
    of the tokens and the answer may be as long as the rest allows (a function, not three
    sentences).
    """
    settings = format_settings(base, "structured")
    most = settings.reasoning_chars
    if kind == "mc":
        update: dict[str, Any] = {"reasoning_chars": reasoning_room(max_tokens, MC_RESERVED_TOKENS, most=most)}
    else:
        update = {
            "reasoning_chars": reasoning_room(max_tokens, max_tokens - max_tokens // 4, most=most),
            "answer_chars": max(settings.answer_chars, min(20_000, max_tokens * 6)),
        }
    return settings.model_copy(update={**update, "max_tokens": max_tokens})


def answer_fields(response: AskResponse) -> dict[str, Any]:
    """What the metrics need of one answer (:mod:`eval.answer_quality`), as row fields."""
    trace, generation = response.trace, response.trace.generation
    cited = [c for c in response.citations if c.cited]
    return {
        "answer": response.answer,
        "reasoning": response.reasoning[:REASONING_LOG_CHARS],
        "cited": [c.number for c in cited],
        "cited_docs": [c.doc_id for c in cited],
        "added": [c.number for c in response.citations if c.added],
        "invalid_citations": list(response.invalid_citations),
        "sources": [c.doc_id for c in response.citations],
        "claims_supported": [c.supported for c in response.claims],
        "grounded": response.grounded,
        "abstained": response.abstained,
        "finish_reason": response.finish_reason,
        "generated": generation is not None and generation.format != "none",
        "well_formed": generation.well_formed if generation else False,
        "loop_detected": generation.loop_detected if generation else False,
        "loop_field": generation.loop_field if generation else None,
        "best_score": generation.best_score if generation else None,
        "abstain_below": generation.abstain_below if generation else None,
        "silos_asked": [s.silo for s in trace.silos if s.outcome != "not_asked"],
        "timings_ms": trace.timings_ms,
        "llm_tokens": trace.llm_tokens,
        "bytes": trace.bytes_exchanged,
        "partial": trace.partial,
    }
