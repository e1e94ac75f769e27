"""Step 5, generation: the LLM request, streamed through the loop guard, read into an answer.

Every answer is generated as a stream, streamed or not to the client, so that the loop guard
can stop a degenerate generation as soon as it starts. The request asks for the settings'
answer format (``structured``: a JSON schema the server enforces; ``free``: ``<think>`` and
``Answer:``) with anti-repetition sampling for the server's kind. The stream's pieces are
``("reasoning", text)`` and ``("content", text)`` (the answer), then a :class:`Generated`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from federation.config import LLMEndpointSettings
from gateway.llm_client import LLMClient
from gateway.loop_guard import Loop, RepetitionGuard
from gateway.prompting import NumberedSource, ParsedAnswer, build_messages, parse_answer
from gateway.streaming import JsonFieldStreamer, ThinkSplitter
from gateway.structured import STREAMED_FIELDS, SchemaLimits, answer_schema, read_structured, response_format

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "repetition"]
# Characters held back from a streamed answer until the loop guard has seen what follows them.
STREAM_HOLDBACK_CHARS = 160
_CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Generated:
    """A generated answer.

    Attributes:
        parsed: reasoning, answer, citations and (multiple choice) the letter.
        answer_format: the format that was asked for.
        well_formed: the reply had the asked form (structured: complete JSON with every field;
            free: an answer was found).
        finish_reason: ``stop``, ``length`` (``max_tokens``) or ``repetition`` (the loop guard stopped it).
        loop_field: where a loop was caught (``reasoning`` or ``answer``), if one was.
        prompt_tokens: prompt tokens, as the server counted them.
        completion_tokens: generated tokens, as the server counted them.
    """

    parsed: ParsedAnswer
    answer_format: str
    well_formed: bool
    finish_reason: FinishReason
    loop_field: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def sampling_fields(llm: LLMEndpointSettings) -> dict[str, Any]:
    """Anti-repetition request fields for the server's kind (nothing the server would not know)."""
    fields: dict[str, Any] = {}
    if llm.frequency_penalty:
        fields["frequency_penalty"] = llm.frequency_penalty
    if llm.server == "llama.cpp":
        fields["repeat_penalty"] = llm.repetition_penalty
        if llm.dry_multiplier > 0:
            fields["dry_multiplier"] = llm.dry_multiplier
    elif llm.server == "vllm":
        fields["repetition_penalty"] = llm.repetition_penalty
    return fields


class _Guards:
    """One loop guard per streamed kind, releasing what is safe to show (disabled: everything, at once)."""

    def __init__(self, holdback: int, enabled: bool) -> None:
        kinds = ("reasoning", "content")
        self._guards = {kind: RepetitionGuard(holdback=holdback) for kind in kinds} if enabled else None
        self._texts: dict[str, list[str]] = {kind: [] for kind in kinds}  # what passed, when disabled

    def feed(self, kind: str, text: str) -> str:
        if self._guards is None:
            self._texts[kind].append(text)
            return text
        return self._guards[kind].feed(text)

    def finish(self, kind: str) -> str:
        return self._guards[kind].finish() if self._guards is not None else ""

    def loop(self, kind: str) -> Loop | None:
        return self._guards[kind].loop if self._guards is not None else None

    def text(self, kind: str) -> str:
        """The text of ``kind`` so far, cut at its loop if one was caught."""
        return self._guards[kind].text if self._guards is not None else "".join(self._texts[kind])

    def looped(self) -> str | None:
        """Where a loop was caught: ``answer``, ``reasoning`` or None."""
        if self.loop("content") is not None:
            return "answer"
        return "reasoning" if self.loop("reasoning") is not None else None


class Generator:
    """Asks the LLM for an answer over numbered sources.

    Args:
        llm: the chat client.
        settings: the LLM endpoint's settings (format, sampling, limits, loop guard).
        require_citation: structured: the schema makes the reply cite at least one source.
    """

    def __init__(self, llm: LLMClient, settings: LLMEndpointSettings, *, require_citation: bool = True) -> None:
        self.llm = llm
        self.settings = settings
        self.require_citation = require_citation

    def request(
        self,
        question: str,
        sources: Sequence[NumberedSource],
        choices: Sequence[str] | None,
        allow_no_context: bool,
        max_tokens: int,
        *,
        reasoning: bool = True,
    ) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """The messages and extra request fields of one answer.

        A structured reasoning may take at most about half of ``max_tokens`` (some four
        characters a token), so that a small budget still leaves room for the answer;
        ``reasoning=False`` asks for the answer without it.
        """
        structured = self.settings.answer_format == "structured"
        messages = build_messages(
            question,
            sources,
            choices=choices,
            allow_no_context=allow_no_context,
            answer_format="structured" if structured else "free",
        )
        extra = sampling_fields(self.settings)
        if structured:
            reasoning_chars = min(self.settings.reasoning_chars, max_tokens * _CHARS_PER_TOKEN // 2)
            limits = SchemaLimits(
                reasoning_chars=reasoning_chars if reasoning else 0,
                answer_chars=self.settings.answer_chars,
                require_citation=self.require_citation,
            )
            schema = answer_schema([s.number for s in sources], choices=len(choices or ()), limits=limits)
            extra["response_format"] = response_format(schema)
        return messages, extra

    async def stream(
        self,
        question: str,
        sources: Sequence[NumberedSource],
        *,
        choices: Sequence[str] | None = None,
        allow_no_context: bool = False,
        max_tokens: int | None = None,
        holdback: int = 0,
    ) -> AsyncIterator[tuple[str, str] | Generated]:
        """Generate an answer: yield ``(kind, text)`` pieces, then the :class:`Generated`.

        A structured reply whose reasoning loops is stopped there and asked once more for the
        answer alone (the schema without ``reasoning``); the reasoning kept is the part before
        the loop.

        Args:
            question: the question.
            sources: the numbered passages of the prompt.
            choices: options of a multiple-choice question.
            allow_no_context: with no sources, answer from general knowledge.
            max_tokens: most tokens to generate (the settings' when None).
            holdback: characters held back for the loop guard (0 when nobody watches the stream).

        Raises:
            FedragError: the LLM's errors (see :class:`gateway.llm_client.LLMClient`).
        """
        structured = self.settings.answer_format == "structured"
        max_tokens = self.settings.max_tokens if max_tokens is None else max_tokens
        guards = _Guards(holdback, self.settings.loop_guard)
        numbers = [s.number for s in sources]
        attempt: _Attempt | None = None
        first_reasoning: str | None = None
        spent = 0
        for with_reasoning in (True, False):
            messages, extra = self.request(
                question, sources, choices, allow_no_context, max_tokens, reasoning=with_reasoning
            )
            async for item in self._attempt(messages, extra, max_tokens, guards):
                if isinstance(item, _Attempt):
                    attempt = item
                else:
                    yield item
            assert attempt is not None
            spent += attempt.completion_tokens or 0
            if not (structured and with_reasoning and attempt.needs_retry(bool(choices))):
                break
            logger.info("the structured reasoning looped or left no answer: asking again for the answer alone")
            first_reasoning = guards.text("reasoning")
        assert attempt is not None
        yield self._read(
            attempt,
            guards,
            choices,
            numbers,
            looped=guards.looped(),
            completion_tokens=spent or None,
            first_reasoning=first_reasoning,
        )

    async def _attempt(
        self, messages: list[dict[str, str]], extra: dict[str, Any], max_tokens: int, guards: _Guards
    ) -> AsyncIterator[tuple[str, str] | _Attempt]:
        """One request, streamed through the guards: pieces, then the :class:`_Attempt`."""
        structured = self.settings.answer_format == "structured"
        reader: JsonFieldStreamer | ThinkSplitter = (
            JsonFieldStreamer(STREAMED_FIELDS) if structured else ThinkSplitter()
        )
        attempt = _Attempt(reader=reader)
        stream = self.llm.stream(
            messages, max_tokens=max_tokens, temperature=self.settings.temperature, extra_body=extra
        )
        try:
            async for delta in stream:
                attempt.finish = delta.finish_reason or attempt.finish
                if delta.prompt_tokens is not None or delta.completion_tokens is not None:
                    attempt.prompt_tokens, attempt.completion_tokens = delta.prompt_tokens, delta.completion_tokens
                pieces = [("reasoning", delta.reasoning)] if delta.reasoning else []
                if delta.content:
                    attempt.raw.append(delta.content)
                    pieces += reader.feed(delta.content)
                for kind, text in pieces:
                    if guards.loop(kind) is not None:
                        continue
                    if released := guards.feed(kind, text):
                        yield (kind, released)
                    if guards.loop(kind) is not None and attempt.loop_field is None:
                        attempt.loop_field = "answer" if kind == "content" else "reasoning"
                if attempt.loop_field is not None:
                    break  # stop generating
            if isinstance(reader, ThinkSplitter):
                for kind, text in reader.flush():
                    if guards.loop(kind) is None and (released := guards.feed(kind, text)):
                        yield (kind, released)
            for kind in ("reasoning", "content"):
                if released := guards.finish(kind):
                    yield (kind, released)
        finally:
            await stream.aclose()
        yield attempt

    def _read(
        self,
        attempt: _Attempt,
        guards: _Guards,
        choices: Sequence[str] | None,
        numbers: list[int],
        *,
        looped: str | None,
        completion_tokens: int | None,
        first_reasoning: str | None,
    ) -> Generated:
        """The answer from the last attempt's reply, the streamed texts and the guards' cuts.

        ``first_reasoning`` is the (cut) reasoning of a first attempt that was asked again
        without reasoning; None when there was one attempt.
        """
        answer_format = self.settings.answer_format
        reason: FinishReason = "length" if attempt.finish == "length" else "stop"
        if attempt.loop_field == "answer" or (looped and answer_format == "free"):
            reason = "repetition"
        raw = "".join(attempt.raw)
        if isinstance(attempt.reader, JsonFieldStreamer):
            reply = read_structured(
                raw, source_numbers=numbers, choices=choices, streamer=attempt.reader, reasoning=first_reasoning is None
            )
            parsed, well_formed = reply.parsed, reply.well_formed
            if looped or first_reasoning is not None:
                answer = guards.text("content") if attempt.loop_field == "answer" else None
                reasoning = first_reasoning if first_reasoning is not None else guards.text("reasoning")
                parsed = _replace_text(parsed, reasoning, answer, numbers, choices)
                well_formed = well_formed and attempt.loop_field != "answer"
        else:
            parsed = parse_answer(
                guards.text("content"),
                reasoning_content=guards.text("reasoning") or None,
                source_numbers=numbers,
                choices=choices,
            )
            well_formed = bool(parsed.answer.strip()) and (not choices or parsed.choice_parsed)
        if looped:
            logger.info("loop stopped in the %s", looped)
        return Generated(
            parsed=parsed,
            answer_format=answer_format,
            well_formed=well_formed and reason != "length",
            finish_reason=reason,
            loop_field=looped,
            prompt_tokens=attempt.prompt_tokens,
            completion_tokens=completion_tokens,
        )


@dataclass
class _Attempt:
    """What one LLM request produced."""

    reader: JsonFieldStreamer | ThinkSplitter
    raw: list[str] = field(default_factory=list)
    finish: str | None = None
    loop_field: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def needs_retry(self, multiple_choice: bool) -> bool:
        """A structured reply whose reasoning looped, or that left no answer (blank, or cut before it)."""
        if self.loop_field == "reasoning":
            return True
        if not isinstance(self.reader, JsonFieldStreamer) or self.loop_field == "answer":
            return False
        answer = self.reader.field("choice" if multiple_choice else "answer")
        return answer is None or not answer.strip()


def _replace_text(
    parsed: ParsedAnswer,
    reasoning: str,
    answer: str | None,
    numbers: Sequence[int],
    choices: Sequence[str] | None,
) -> ParsedAnswer:
    """``parsed`` with the reasoning and/or answer cut at a loop (citations re-read from the cut answer)."""
    if answer is None:
        return replace(parsed, reasoning=reasoning.strip())
    cut = parse_answer(f"Answer: {answer}", source_numbers=numbers, choices=choices)
    return replace(
        cut,
        reasoning=reasoning.strip(),
        choice=parsed.choice or cut.choice,
        choice_parsed=parsed.choice_parsed or cut.choice_parsed,
    )
