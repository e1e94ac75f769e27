"""The five steps of a question: embed, route, search, aggregate, generate — with a trace.

``Pipeline.retrieve`` runs steps 1-4 and returns the numbered sources; ``Pipeline.answer``
and ``Pipeline.answer_stream`` add step 5. A silo that fails or is late degrades the answer
(it is flagged partial, the failure is in the trace); it never breaks it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from aggregation import (
    Merger,
    Passage,
    SourceRef,
    approx_token_count,
    assign_sources,
    deduplicate,
    make_merger,
    pack_context,
)
from federation.config import GatewaySettings, GroundingSettings, LLMEndpointSettings
from federation.encoder import Encoder
from federation.errors import UpstreamError
from gateway.conversation import Standalone
from gateway.dp_answer import DPAnswerer
from gateway.fanout import SiloOutcome, SiloPool
from gateway.generation import STREAM_HOLDBACK_CHARS, Generated, Generator
from gateway.grounding import GroundingChecker, GroundingReport
from gateway.llm_client import LLMClient
from gateway.models import DP_MODEL, resolve_model
from gateway.prompting import NumberedSource, ParsedAnswer, read_choice
from gateway.protocol import AskResponse, Citation, Claim, GenerationTrace, PrivacyReport, SiloTrace, Trace
from router import Router, RoutingPlan, SiloView, make_router

logger = logging.getLogger(__name__)

_PROMPT_OVERHEAD_TOKENS = 300
SourceOrder = Callable[[list[Passage]], list[Passage]]
"""Reorders the packed passages before they are numbered (the evaluation's position-bias probe)."""
ABSTAIN_ANSWER = "The sources do not contain the answer to this question."
_T = TypeVar("_T")


@dataclass
class Retrieval:
    """Steps 1-4 of one question: the numbered sources and the trace so far.

    ``ranked`` is the merged, deduplicated top-k before it is packed into the model's
    context (what retrieval quality is measured on); ``sources`` is what the prompt gets.
    """

    request_id: str
    sources: list[SourceRef]
    plan: RoutingPlan | None
    outcomes: list[SiloOutcome]
    asked: Standalone
    timings_ms: dict[str, float] = field(default_factory=dict)
    ranked: list[Passage] = field(default_factory=list)
    merged: int = 0
    duplicates: int = 0

    @property
    def best_score(self) -> float | None:
        """The best merged passage's retrieval score (the silo's similarity), None without passages."""
        return max((p.score for p in self.ranked), default=None)

    @property
    def partial(self) -> bool:
        """Whether a routed silo failed, was late, or was skipped (its breaker open, the budget reached)."""
        return bool(self.partial_reasons)

    @property
    def partial_reasons(self) -> list[str]:
        """Why the answer is partial: ``silo: reason`` per silo it lacks (empty: complete)."""
        failed = [o for o in self.outcomes if o.status != "ok"]
        reasons = [f"{o.silo}: {o.status}" + (f" ({o.detail})" if o.detail else "") for o in failed]
        skipped = self.plan.skipped if self.plan else []
        return reasons + [f"{d.silo}: not asked, {d.reason}" for d in skipped if d.degraded]


class Pipeline:
    """Answers questions over the federation."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        encoder: Encoder,
        pool: SiloPool,
        router: Router,
        merger: Merger,
        llm: LLMClient,
        executor_run: ExecutorRun,
        source_order: SourceOrder | None = None,
    ) -> None:
        """``source_order``, when given, reorders the sources the LLM sees; by default they keep the merged rank."""
        self.settings = settings
        self.encoder = encoder
        self.pool = pool
        self.router = router
        self.merger = merger
        self.llm = llm
        self._run = executor_run
        self._source_order = source_order
        self.model_name = resolve_model(settings.llm, None).name
        self.dp_answerer: DPAnswerer | None = None  # set when [dp_answer] is enabled (the app's lifespan)
        self._configure_answering()

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        *,
        encoder: Encoder,
        pool: SiloPool,
        llm: LLMClient,
        executor_run: ExecutorRun,
        source_order: SourceOrder | None = None,
    ) -> Pipeline:
        """The one assembly point: the router and merger that ``settings.retrieval`` names, over ``pool``.

        The app, the evaluation harness and the benchmarks build their pipelines here, so a
        retrieval setting (router coverage, threshold, top-m, model file) means the same in each.
        """
        cfg = settings.retrieval
        router = make_router(
            cfg.router,
            threshold=cfg.router_threshold,
            top_m=cfg.router_top_m,
            model_path=cfg.router_model,
            coverage=cfg.router_coverage,
            guard=cfg.router_guard,
        )
        return cls(
            settings,
            encoder=encoder,
            pool=pool,
            router=router,
            merger=make_merger(cfg.merger),
            llm=llm,
            executor_run=executor_run,
            source_order=source_order,
        )

    def _configure_answering(self) -> None:
        """The generator and grounding checker of step 5, from the settings."""
        grounding = self.settings.grounding
        self.generator = Generator(self.llm, self.settings.llm, require_citation=grounding.require_citation)
        self.grounding = GroundingChecker(
            self.encoder.encode,
            support_threshold=grounding.support_threshold,
            add_missing_citations=grounding.add_missing_citations,
        )
        self._descriptions: dict[str, np.ndarray] = {}

    def with_generation(self, llm: LLMEndpointSettings, grounding: GroundingSettings | None = None) -> Pipeline:
        """This pipeline generating with other LLM settings (answer format, sampling, loop guard) and grounding.

        Everything else (encoder, silos, router, merger, the LLM client, the embedded silo
        descriptions) is shared; the evaluation harness compares generation settings on the
        same retrieval this way.
        """
        variant = copy.copy(self)
        variant.settings = self.settings.model_copy(
            update={"llm": llm, "grounding": grounding or self.settings.grounding}
        )
        variant._configure_answering()
        return variant

    def for_model(self, requested: str | None) -> Pipeline:
        """This pipeline answering with the model a request names (:func:`gateway.models.resolve_model`).

        Raises:
            NotFound: an unknown ``fedrag:`` model (``model_not_found``).
        """
        choice = resolve_model(self.settings.llm, requested, dp=self.dp_answerer is not None)
        variant = copy.copy(self)
        variant.llm = self.llm.with_adapter(choice.adapter)
        variant.model_name = choice.name
        variant.generator = Generator(
            variant.llm, self.settings.llm, require_citation=self.settings.grounding.require_citation
        )
        return variant

    async def _embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors: np.ndarray = await self._run(self.encoder.encode, list(texts))
        return vectors

    async def _views(self) -> list[SiloView]:
        await self.pool.refresh_cards()
        cards = {n: c for n in self.pool.names if (c := self.pool.card(n)) is not None and n not in self._descriptions}
        if cards:
            vectors = await self._embed([card.description or name for name, card in cards.items()])
            self._descriptions.update(zip(cards, vectors, strict=True))
        views = []
        for name in self.pool.names:
            breaker = self.pool.breaker(name)
            views.append(
                SiloView(
                    name=name,
                    card=self.pool.card(name),
                    healthy=breaker.state != "open",
                    health_reason=breaker.reason(),
                    description_vector=self._descriptions.get(name),
                )
            )
        return views

    async def retrieve(
        self,
        question: str | Standalone,
        *,
        request_id: str | None = None,
        k: int | None = None,
        for_prompt: bool = True,
    ) -> Retrieval:
        """Embed, route, search and aggregate: the numbered sources for ``question``.

        Args:
            question: what to search for (a conversation's :class:`Standalone` question, or text).
            request_id: the trace's request id (a new one when None).
            k: passages kept after merging (the settings' ``k`` when None).
            for_prompt: pack the sources into the LLM's context budget (False: the whole top ``k``,
                for clients that bring their own LLM).
        """
        asked = question if isinstance(question, Standalone) else Standalone(question, "request")
        question = asked.question
        request_id = request_id or uuid.uuid4().hex[:16]
        retrieval = Retrieval(request_id=request_id, sources=[], plan=None, outcomes=[], asked=asked)
        timings = retrieval.timings_ms
        cfg = self.settings.retrieval

        t = time.perf_counter()
        query = (await self._embed([question]))[0]
        timings["embed"] = _ms(t)

        t = time.perf_counter()
        views = await self._views()
        retrieval.plan = self.router.route(query, views, max_silos=cfg.silo_budget())
        timings["route"] = _ms(t)

        t = time.perf_counter()
        # Few silos asked must still be able to fill k (one silo: k passages, not k_per_silo).
        k = k or cfg.k
        selected = retrieval.plan.selected
        k_each = max(cfg.k_per_silo, math.ceil(k / len(selected))) if selected else cfg.k_per_silo
        retrieval.outcomes = await self.pool.search(selected, query, k_each, request_id=request_id, text=question)
        timings["search"] = _ms(t)

        t = time.perf_counter()
        per_silo = {o.silo: o.passages for o in retrieval.outcomes if o.status == "ok"}
        merged = self.merger.merge(per_silo, k * 2)
        kept, retrieval.duplicates = deduplicate(merged, threshold=cfg.dedup_threshold)
        kept = kept[:k]
        retrieval.ranked = kept
        retrieval.merged = len(merged)
        packed = kept
        if for_prompt:
            budget = self._context_budget(question)
            packed, _ = pack_context(kept, budget_tokens=budget, count_tokens=approx_token_count)
        if self._source_order is not None:
            packed = self._source_order(packed)
        retrieval.sources = assign_sources(packed, show_silo_names=cfg.show_silo_names, rng=random.Random())
        timings["aggregate"] = _ms(t)
        return retrieval

    def _context_budget(self, question: str) -> int:
        llm = self.settings.llm
        spare = llm.context_tokens - llm.max_tokens - _PROMPT_OVERHEAD_TOKENS - approx_token_count(question)
        return max(0, spare)

    def _numbered(self, sources: Sequence[SourceRef]) -> list[NumberedSource]:
        return [
            NumberedSource(number=s.number, title=s.passage.title, text=s.passage.text, label=s.silo_label)
            for s in sources
        ]

    def _llm_only_allowed(self, requested: bool) -> bool:
        return requested and self.settings.allow_llm_only

    def _abstains(self, retrieval: Retrieval) -> bool:
        threshold = self.settings.grounding.abstain_below
        best = retrieval.best_score
        return threshold is not None and best is not None and best < threshold

    async def answer(
        self,
        question: str | Standalone,
        *,
        choices: Sequence[str] | None = None,
        allow_llm_only: bool = False,
        request_id: str | None = None,
        max_tokens: int | None = None,
    ) -> AskResponse:
        """Answer ``question`` (text, or a conversation's :class:`Standalone`) with reasoning and citations."""
        events = self.answer_stream(
            question,
            choices=choices,
            allow_llm_only=allow_llm_only,
            request_id=request_id,
            max_tokens=max_tokens,
            holdback=0,
        )
        async for event in events:
            if isinstance(event, AskResponse):
                return event
        raise UpstreamError("the answer stream ended without an answer", code="llm_invalid_reply")

    async def answer_stream(
        self,
        question: str | Standalone,
        *,
        choices: Sequence[str] | None = None,
        allow_llm_only: bool = False,
        request_id: str | None = None,
        max_tokens: int | None = None,
        holdback: int = STREAM_HOLDBACK_CHARS,
    ) -> AsyncIterator[tuple[str, str] | AskResponse]:
        """Yield ``("reasoning", text)`` and ``("content", text)`` deltas, then the full :class:`AskResponse`.

        Args:
            question: the question (a conversation's :class:`Standalone` question: it is asked as retrieved).
            choices: options of a multiple-choice question.
            allow_llm_only: answer from the model alone when nothing could be retrieved (if the settings allow).
            request_id: the trace's request id (a new one when None).
            max_tokens: most tokens to generate.
            holdback: characters of the answer held back for the loop guard before they are yielded.
        """
        started = time.perf_counter()
        if self.model_name == DP_MODEL and self.dp_answerer is not None:
            response = await self._answer_dp(question, choices=choices, request_id=request_id, started=started)
            yield ("content", response.answer)
            yield response
            return
        retrieval = await self.retrieve(question, request_id=request_id)
        question = retrieval.asked.question
        if not retrieval.sources and not self._llm_only_allowed(allow_llm_only):
            response = self._without_llm(retrieval, started, self._nothing_retrieved_text(retrieval))
            yield ("content", response.answer)
            yield response
            return
        if retrieval.sources and not choices and self._abstains(retrieval):  # an option must still be chosen
            response = self._without_llm(retrieval, started, ABSTAIN_ANSWER, abstained=True)
            yield ("content", response.answer)
            yield response
            return
        t = time.perf_counter()
        generated: Generated | None = None
        for attempt in range(2):
            events = self.generator.stream(
                question,
                self._numbered(retrieval.sources),
                choices=choices,
                allow_no_context=self._llm_only_allowed(allow_llm_only),
                max_tokens=max_tokens,
                holdback=holdback,
            )
            try:
                first = await anext(events)
            except UpstreamError as exc:
                await events.aclose()  # type: ignore[attr-defined]
                if attempt or exc.code != "llm_context_overflow" or len(retrieval.sources) < 2:
                    raise
                retrieval.sources = retrieval.sources[: len(retrieval.sources) // 2]  # once more, half the passages
                continue
            try:
                event: tuple[str, str] | Generated = first
                while not isinstance(event, Generated):
                    yield event
                    event = await anext(events)
                generated = event
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            break
        assert generated is not None
        retrieval.timings_ms["generate"] = _ms(t)
        grounding = None
        if self.settings.grounding.check and retrieval.sources and generated.parsed.answer:
            t = time.perf_counter()
            texts = {s.number: s.passage.text for s in retrieval.sources}
            grounding = await self._run(
                self.grounding.check, generated.parsed.answer, texts, list(generated.parsed.citations)
            )
            retrieval.timings_ms["ground"] = _ms(t)
        yield self._response(retrieval, generated, grounding, started, choices, model=self.model_name)

    async def _answer_dp(
        self, question: str | Standalone, *, choices: Sequence[str] | None, request_id: str | None, started: float
    ) -> AskResponse:
        """A DP answer (:mod:`gateway.dp_answer`): every silo asked, voters over shards, no citations."""
        assert self.dp_answerer is not None
        asked = question if isinstance(question, Standalone) else Standalone(question, "request")
        retrieval = Retrieval(
            request_id=request_id or uuid.uuid4().hex[:16], sources=[], plan=None, outcomes=[], asked=asked
        )
        timings = retrieval.timings_ms
        t = time.perf_counter()
        query = (await self._embed([asked.question]))[0]
        timings["embed"] = _ms(t)
        t = time.perf_counter()
        reading = await self.dp_answerer.read(self.pool, self.pool.names, query, request_id=retrieval.request_id)
        retrieval.outcomes = reading.failures
        timings["search"] = _ms(t)
        t = time.perf_counter()
        answer = await self.dp_answerer.answer(asked.question, reading, choices=choices)
        timings["generate"] = _ms(t)
        timings["total"] = _ms(started)
        choice = read_choice(answer.text, False, choices) if choices else None
        cfg = self.dp_answerer.settings
        return AskResponse(
            id=f"ask-{retrieval.request_id}",
            model=DP_MODEL,
            answer=answer.text,
            reasoning="",
            citations=[],
            choice=choice,
            choice_parsed=choice is not None if choices else None,
            partial=retrieval.partial,
            retrieved=answer.documents_read > 0,
            privacy=PrivacyReport(
                epsilon=answer.epsilon,
                paid_tokens=answer.paid_tokens,
                voters=cfg.voters,
                documents_read=answer.documents_read,
                documents_left_out=answer.documents_left_out,
                document_budget=cfg.document_budget,
            ),
            trace=self._trace(retrieval, None),
        )

    def _nothing_retrieved_text(self, retrieval: Retrieval) -> str:
        failures = [f"{o.silo}: {o.status}" + (f" ({o.detail})" if o.detail else "") for o in retrieval.outcomes]
        why = "; ".join(failures) if failures else "no silo returned a passage relevant enough to release"
        return f"No passages could be retrieved from the federation for this question ({why})."

    def _without_llm(
        self, retrieval: Retrieval, started: float, answer: str, *, abstained: bool = False
    ) -> AskResponse:
        parsed = ParsedAnswer(
            reasoning="", answer=answer, citations=(), invalid_citations=(), choice=None, choice_parsed=False
        )
        generated = Generated(
            parsed=parsed,
            answer_format="none",
            well_formed=True,
            finish_reason="stop",
            loop_field=None,
            prompt_tokens=None,
            completion_tokens=None,
        )
        return self._response(
            retrieval, generated, None, started, None, abstained=abstained, model=self.settings.llm.model
        )

    def _response(
        self,
        retrieval: Retrieval,
        generated: Generated,
        grounding: GroundingReport | None,
        started: float,
        choices: Sequence[str] | None,
        *,
        abstained: bool = False,
        model: str,
    ) -> AskResponse:
        retrieval.timings_ms["total"] = _ms(started)
        parsed = generated.parsed
        cited = set(parsed.citations)
        added = set(grounding.added_citations) if grounding else set()
        citations = [
            Citation(
                number=s.number,
                silo=s.silo_label,
                doc_id=s.passage.doc_id,
                chunk_id=s.passage.chunk_id
                if self.settings.retrieval.show_silo_names
                else f"{s.silo_label}:{s.number}",
                title=s.passage.title,
                text=s.passage.text,
                score=s.passage.score,
                cited=s.number in cited,
                added=s.number in added and s.number not in cited,
            )
            for s in retrieval.sources
        ]
        claims = [
            Claim(
                text=c.text,
                citations=list(c.citations),
                supported=c.supported,
                support=round(c.support, 4),
                added=c.added,
            )
            for c in (grounding.claims if grounding else ())
        ]
        grounded: bool | None = None
        if retrieval.sources and not abstained:
            grounded = grounding.grounded if grounding else bool(cited) and bool(parsed.answer.strip())
        return AskResponse(
            id=f"ask-{retrieval.request_id}",
            model=model,
            answer=parsed.answer,
            reasoning=parsed.reasoning,
            citations=citations,
            invalid_citations=list(parsed.invalid_citations),
            claims=claims,
            grounded=grounded,
            abstained=abstained,
            finish_reason=generated.finish_reason,
            choice=parsed.choice,
            choice_parsed=parsed.choice_parsed if choices else None,
            partial=retrieval.partial,
            retrieved=bool(retrieval.sources),
            trace=self._trace(retrieval, generated),
        )

    def retrieval_trace(self, retrieval: Retrieval) -> Trace:
        """The trace of steps 1-4 alone (``/v1/retrieve``)."""
        retrieval.timings_ms.setdefault("total", sum(retrieval.timings_ms.values()))
        return self._trace(retrieval, None)

    def _trace(self, retrieval: Retrieval, generated: Generated | None) -> Trace:
        outcomes = {o.silo: o for o in retrieval.outcomes}
        silos = []
        decisions = retrieval.plan.decisions if retrieval.plan else ()
        for decision in decisions:
            outcome = outcomes.get(decision.silo)
            silos.append(
                SiloTrace(
                    silo=decision.silo if self.settings.retrieval.show_silo_names else "(hidden)",
                    routed=decision.selected,
                    route_score=None if decision.score != decision.score else decision.score,
                    route_reason=decision.reason,
                    outcome=outcome.status if outcome else "not_asked",
                    detail=outcome.detail if outcome else "",
                    latency_ms=outcome.latency_ms if outcome else 0.0,
                    passages=len(outcome.passages) if outcome else 0,
                    bytes_sent=outcome.bytes_sent if outcome else 0,
                    bytes_received=outcome.bytes_received if outcome else 0,
                )
            )
        return Trace(
            request_id=retrieval.request_id,
            router=self.router.name,
            merger=self.merger.name,
            silos=silos,
            timings_ms={k: round(v, 2) for k, v in retrieval.timings_ms.items()},
            partial=retrieval.partial,
            partial_reasons=retrieval.partial_reasons if self.settings.retrieval.show_silo_names else [],
            passages_merged=retrieval.merged,
            duplicates_removed=retrieval.duplicates,
            passages_in_prompt=len(retrieval.sources),
            bytes_exchanged=sum(o.bytes_sent + o.bytes_received for o in retrieval.outcomes),
            question=retrieval.asked.question,
            question_from=retrieval.asked.origin,
            question_note=retrieval.asked.note,
            llm_tokens={"prompt": generated.prompt_tokens, "completion": generated.completion_tokens}
            if generated
            else {},
            generation=None
            if generated is None
            else GenerationTrace(
                format=generated.answer_format,
                finish_reason=generated.finish_reason,
                loop_detected=generated.loop_field is not None,
                loop_field=generated.loop_field,
                well_formed=generated.well_formed,
                best_score=retrieval.best_score,
                abstain_below=self.settings.grounding.abstain_below,
            ),
        )


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


class ExecutorRun:
    """Runs blocking callables in the gateway's thread pool (the encoder)."""

    def __init__(self, workers: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway")

    async def __call__(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        """Stop the pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)
