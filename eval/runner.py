"""Run every configuration over the same questions and log one row per (configuration, question).

For each suite the runner draws the questions and documents (:mod:`eval.suites`), builds
the central index and the partitions the configurations need (:mod:`eval.builder`, cached
under ``OUT/federations``), trains the learned router of each partition on questions
disjoint from the evaluation questions, then serves each configuration's silos and asks
its questions through the gateway's own :class:`gateway.pipeline.Pipeline`. Rows go to
``OUT/questions.jsonl`` as they are produced (:class:`eval.records.QuestionLog`), so an
interrupted run continues where it stopped.

Configurations that answer free-form (``answer_configs``) also answer a seeded sample of the
retrieval questions and the suite's unanswerable ones, once per answer format
(:mod:`eval.answering`; rows of kind ``answer:<format>``). Before the structured answers, the
abstention threshold is calibrated (:func:`eval.abstention.calibrate_threshold`) on questions
none of them is: the other retrieval questions and held-out unanswerable ones (rows of kind
``calibration``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aggregation import Passage
from eval.abstention import calibrate_threshold, calibration_sample
from eval.adapters import LoraAdapter, adapter_identity
from eval.answering import (
    ANSWER_FORMATS,
    REASONING_LOG_CHARS,
    AnswerFormat,
    answer_fields,
    format_settings,
    kind_settings,
)
from eval.builder import BuiltFederation, ServeMode, build_federation, serve_silos
from eval.configs import EvalConfig
from eval.datasets import RetrievalQuestion
from eval.embedding_cache import CachingEncoder
from eval.grading import grade, pose
from eval.metrics import citation_validity, ndcg_at_k, recall_at_k, silo_recall
from eval.own_suite import OWN_SUITE, load_own_suite, own_corpus_digest
from eval.partition import PartitionName, document_vectors, partition_documents
from eval.records import QuestionLog
from eval.suites import SuiteData, corpus_description, load_suite
from federation.config import (
    ChunkingSettings,
    GatewaySettings,
    GroundingSettings,
    LLMEndpointSettings,
    NoisySelectionSettings,
    RetrievalSettings,
)
from federation.encoder import Encoder
from federation.errors import ConfigError, FedragError
from federation.identity import Identity
from federation.signing import RequestSigner
from gateway.app import llm_settings
from gateway.fanout import SiloPool
from gateway.generation import Generated, Generator
from gateway.llm_client import LLMClient
from gateway.pipeline import ExecutorRun, Pipeline, SourceOrder
from gateway.router_training import label_questions, train_router

__all__ = ["Progress", "RunOptions", "run_suite"]

logger = logging.getLogger(__name__)


class Progress:
    """Progress callbacks (the CLI draws bars; tests pass this no-op)."""

    def start(self, description: str, total: int) -> None:
        """A step with ``total`` units begins."""

    def advance(self, units: int = 1) -> None:
        """``units`` more units are done."""

    def note(self, message: str) -> None:
        """A line worth showing."""


SourceOrderName = Literal["retrieval", "shuffled"]
_IDENTITY_FIELDS = (
    "llm_model", "retrieval_limit", "mc_limit", "code_limit", "docs_per_corpus", "silos", "k", "k_per_silo",
    "max_silos", "router_training_questions", "mc_max_tokens", "code_max_tokens", "context_tokens", "seed",
    "answer_limit", "abstain_limit", "calibration_limit", "answer_max_tokens",
)  # fmt: skip


@dataclass(frozen=True)
class RunOptions:
    """What a run asks (the part that decides its questions and answers is kept in ``OUT/run.json``).

    ``answer_configs`` answer ``answer_limit`` retrieval questions and ``abstain_limit``
    unanswerable ones free-form in each of ``answer_formats``; ``calibration_limit`` more
    unanswerable questions calibrate the structured format's abstention threshold.
    ``lora_adapters`` are served beside the base model and the first one answers every
    question (:mod:`eval.adapters`); their file hashes are part of the run's identity.
    ``source_order`` ``shuffled`` shows each answer prompt's sources in a seeded permutation
    instead of their merged rank: a position-bias probe (does the model cite the source that
    answers, or the first one?).
    ``corpus`` and ``questions`` (both or neither) replace the packaged suites with the user's own
    (:mod:`eval.own_suite`; ``silo_field`` names each JSONL record's silo). ``encoder_backend``
    runs the embedding model for every silo and question (:data:`federation.encoder.ENCODER_BACKENDS`).
    """

    out: Path
    configs: tuple[EvalConfig, ...]
    llm_configs: frozenset[str]
    llm_url: str | None
    llm_model: str = "smollm2-135m-instruct"
    retrieval_limit: int = 100
    mc_limit: int = 20
    code_limit: int = 5
    docs_per_corpus: int = 400
    silos: int = 6
    k: int = 10
    k_per_silo: int = 10
    max_silos: int = 8
    router_training_questions: int = 200
    mc_max_tokens: int = 96
    code_max_tokens: int = 320
    context_tokens: int = 2048
    answer_configs: frozenset[str] = frozenset()
    answer_formats: tuple[AnswerFormat, ...] = ANSWER_FORMATS
    answer_limit: int = 20
    abstain_limit: int = 10
    calibration_limit: int = 40
    answer_max_tokens: int = 384
    llm_timeout_s: float = 300.0
    serve_mode: ServeMode = "inprocess"
    seed: int = 0
    lora_adapters: tuple[LoraAdapter, ...] = ()
    source_order: SourceOrderName = "retrieval"
    corpus: Path | None = None
    questions: Path | None = None
    silo_field: str = "silo"
    encoder_backend: str = "torch"

    def identity(self) -> dict[str, Any]:
        """The options that decide questions and answers: a resumed run must use the same.

        The adapters (names and file hashes) and a shuffled source order are included only when
        set, so runs without them keep the identity they had before these options existed.
        """
        identity = {key: getattr(self, key) for key in _IDENTITY_FIELDS}
        if self.lora_adapters:
            identity["lora"] = adapter_identity(self.lora_adapters)
        if self.source_order != "retrieval":
            identity["source_order"] = self.source_order
        if self.encoder_backend != "torch":
            identity["encoder_backend"] = self.encoder_backend
        if self.corpus is not None and self.questions is not None:
            identity["own"] = {
                "corpus": own_corpus_digest(self.corpus),
                "questions": own_corpus_digest(self.questions),
                "silo_field": self.silo_field,
            }
        return identity

    @property
    def suites(self) -> list[str] | None:
        """The suites a user's own corpus makes (``own``); None: the packaged ones."""
        return [OWN_SUITE] if self.corpus is not None else None

    @property
    def default_adapter(self) -> str | None:
        """The adapter that answers (the first of ``lora_adapters``), or None for the base model."""
        return self.lora_adapters[0].name if self.lora_adapters else None

    def answers(self, config: EvalConfig) -> bool:
        """Whether ``config`` answers retrieval and unanswerable questions free-form."""
        return config.retrieves and config.name in self.answer_configs and bool(self.answer_formats)


def shuffled_sources(seed: int) -> SourceOrder:
    """A source order that permutes each prompt's passages, seeded by ``seed`` and the passages.

    The same passages always get the same permutation, so every model of a comparison sees the
    same prompts.
    """

    def order(passages: list[Passage]) -> list[Passage]:
        key = "\0".join(passage_key(p) for p in passages)
        shuffled = list(passages)
        random.Random(f"{seed}:{key}").shuffle(shuffled)
        return shuffled

    return order


def _doc_ids(passages: Sequence[Passage], k: int) -> list[str]:
    """Document ids of the ranked passages, first occurrence only, at most ``k``."""
    seen: list[str] = []
    for passage in passages:
        if passage.doc_id not in seen:
            seen.append(passage.doc_id)
        if len(seen) == k:
            break
    return seen


def passage_key(passage: Passage) -> str:
    """A passage's identity across silos (chunk ids are per silo): document and text."""
    return hashlib.sha256(f"{passage.doc_id}\0{passage.text}".encode()).hexdigest()[:16]


@dataclass
class Served:
    """A configuration's silos being served, and the pipeline over them."""

    pipeline: Pipeline
    pool: SiloPool
    run: ExecutorRun

    def variant(self, llm: LLMEndpointSettings, grounding: GroundingSettings | None = None) -> Pipeline:
        """The same pipeline (silos, router, encoder, LLM client) with other generation and grounding settings."""
        return self.pipeline.with_generation(llm, grounding)


class SuiteRun:
    """One suite of one run: federations, routers, and the questions of every configuration."""

    def __init__(
        self, options: RunOptions, data: SuiteData, encoder: CachingEncoder, log: QuestionLog, progress: Progress
    ) -> None:
        self.options = options
        self.data = data
        self.name = data.suite.name
        self.encoder = encoder
        self.log = log
        self.progress = progress
        self.root = options.out / "federations" / self.name
        self._federations: dict[str, BuiltFederation] = {}
        # The retrieval questions answered free-form: a seeded sample spread over the corpora (the
        # questions are sorted by corpus, so the first ones would all be about one); the others
        # are the answerable side of the abstention calibration.
        retrieval = data.retrieval
        picked = random.Random(f"{options.seed}:answer:{self.name}").sample(
            range(len(retrieval)), min(options.answer_limit, len(retrieval))
        )
        self.answered = [retrieval[i] for i in sorted(picked)]
        self._answered_ids = {q.id for q in self.answered}

    # building -------------------------------------------------------------------------
    def federation(self, config: EvalConfig) -> BuiltFederation:
        """The built federation a configuration asks (built on first use)."""
        key = "central" if config.kind == "central" else config.partition
        if key not in self._federations:
            self._federations[key] = self._build(key)
        return self._federations[key]

    def _build(self, key: str) -> BuiltFederation:
        documents = self.data.documents
        if key == "central":
            parts = {"central": documents}
            descriptions = {"central": f"Every {self.name} document"}
            backend: Literal["faiss", "exact"] = "exact"
        else:
            partition: PartitionName = key  # type: ignore[assignment]
            vectors = None
            if partition == "topical":
                self.progress.start(f"{self.name}: embedding documents for the topical partition", len(documents))
                vectors = document_vectors(documents, self.encoder, ChunkingSettings())
                self.progress.advance(len(documents))
            parts = partition_documents(
                documents, partition, silos=self.options.silos, vectors=vectors, seed=self.options.seed
            )
            descriptions = {name: corpus_description(name) for name in parts}
            backend = "faiss"
        self.progress.start(f"{self.name}: building the {key} federation", len(documents))
        built = build_federation(
            self.root / key,
            parts,
            self.encoder,
            descriptions=descriptions,
            index_backend=backend,
            on_silo=lambda _name, count: self.progress.advance(count),
        )
        self.encoder.save()
        return built

    # serving --------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def pipeline(self, config: EvalConfig, llm: LLMClient | None) -> AsyncIterator[Served]:
        """A pipeline over the configuration's silos, served as the options say."""
        federation = self.federation(config)
        noisy = None
        if config.noisy_epsilon is not None:
            noisy = NoisySelectionSettings(enabled=True, epsilon_per_query=config.noisy_epsilon, budget_per_window=1e12)
        router_model = self.router_model(config.partition) if config.router == "learned" else None
        settings = self.gateway_settings(federation, config, router_model)
        cfg = settings.retrieval
        run = ExecutorRun()
        order = shuffled_sources(self.options.seed) if self.options.source_order == "shuffled" else None
        async with serve_silos(
            federation, mode=self.options.serve_mode, noisy=noisy, encoder=self.encoder, search=config.search
        ) as (
            membership,
            transports,
        ):
            signer = RequestSigner(Identity.load(federation.gateway_key_file))
            pool = SiloPool(membership, signer, cfg, transports=transports)
            client = llm or LLMClient(llm_settings(settings))
            try:
                await pool.refresh_cards(force=True)
                pipeline = Pipeline.from_settings(
                    settings, encoder=self.encoder.inner, pool=pool, llm=client, executor_run=run, source_order=order
                )
                yield Served(pipeline, pool, run)
            finally:
                await pool.aclose()
                if llm is None:
                    await client.aclose()
                run.shutdown()

    def gateway_settings(
        self, federation: BuiltFederation, config: EvalConfig, router_model: Path | None
    ) -> GatewaySettings:
        """The gateway settings of a configuration."""
        o = self.options
        return GatewaySettings(
            federation_file=federation.federation_file,
            key_file=federation.gateway_key_file,
            llm=self.llm_endpoint(),
            retrieval=RetrievalSettings(
                router=config.router if config.kind == "federated" else "all",
                router_model=router_model,
                router_guard=config.router_guard,
                max_silos=o.max_silos if config.router != "all" else 256,
                k_per_silo=o.k_per_silo,
                k=o.k,
                merger=config.merger,
                deadline_s=30.0,
                breaker_failures=1000,
            ),
        )

    def llm_endpoint(self) -> LLMEndpointSettings:
        """The LLM settings every answer starts from (greedy; each kind of question bounds its own tokens)."""
        o = self.options
        return LLMEndpointSettings(
            base_url=o.llm_url or "http://127.0.0.1:9",
            model=o.llm_model,
            timeout_s=o.llm_timeout_s,
            max_tokens=o.mc_max_tokens,
            temperature=0.0,
            context_tokens=o.context_tokens,
            adapters=[a.name for a in o.lora_adapters],
            lora_adapter=o.default_adapter,
        )

    def _kind_llm(self, kind: str) -> LLMEndpointSettings:
        """The generation settings of a multiple-choice (``mc``) or ``code`` answer."""
        o = self.options
        return kind_settings(self.llm_endpoint(), kind, o.mc_max_tokens if kind == "mc" else o.code_max_tokens)

    def router_model(self, partition: PartitionName) -> Path:
        """Where the learned router of ``partition`` is saved (by :meth:`train_router`)."""
        return self.options.out / "routers" / f"{self.name}-{partition}.json"

    async def train_router(self, partition: PartitionName) -> None:
        """Train and save the learned router of ``partition`` unless it exists."""
        path = self.router_model(partition)
        if path.is_file():
            return
        questions = self.training_questions()
        self.progress.start(
            f"{self.name}: labelling {len(questions)} router training questions ({partition})", len(questions)
        )
        config = EvalConfig(f"train@{partition}", "federated", partition)
        async with self.pipeline(config, None) as served:
            examples = await label_questions(
                questions, encoder=self.encoder, pool=served.pool, k=self.options.k, on_question=self.progress.advance
            )
        try:
            router, _ = train_router(examples)  # calibrated to 0.95 of all-silo recall, as `fedrag router train`
        except ValueError as exc:
            raise ConfigError(f"cannot train the learned router for {self.name}/{partition}: {exc}") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        router.save(path)

    def training_questions(self) -> list[str]:
        """Titles of ingested documents that no evaluation question is about (no leakage)."""
        gold = {doc_id for q in self.data.retrieval for doc_id in q.gold_doc_ids}
        asked = {q.question.casefold() for q in self.data.retrieval}
        pool = [
            d.title for d in self.data.documents if d.doc_id not in gold and d.title and d.title.casefold() not in asked
        ]
        rng = random.Random(f"{self.options.seed}:router:{self.name}")
        return rng.sample(pool, min(self.options.router_training_questions, len(pool)))

    # asking ---------------------------------------------------------------------------
    def pending(self, config: EvalConfig) -> list[tuple[str, Any]]:
        """The questions of ``config`` not yet in the log, as (kind, question)."""
        todo: list[tuple[str, Any]] = []
        if config.retrieves:
            todo += [("retrieval", q) for q in self.data.retrieval]
        if config.name in self.options.llm_configs:
            todo += [("mc", q) for q in self.data.multiple_choice]
            todo += [("code", p) for p in self.data.code]
        if self.options.answers(config):
            if "structured" in self.options.answer_formats:
                todo += [("calibration", q) for q in self.data.calibration]
            for answer_format in self.options.answer_formats:
                todo += [(f"answer:{answer_format}", q) for q in [*self.answered, *self.data.unanswerable]]
        return [(kind, q) for kind, q in todo if (self.name, config.name, kind, q.id) not in self.log]

    def abstain_below(self, config: EvalConfig) -> float | None:
        """The structured answers' abstention threshold, calibrated on ``config``'s calibration rows in the log."""
        rows = [r for r in self.log.rows() if r["suite"] == self.name and r["config"] == config.name]
        choice = calibrate_threshold(*calibration_sample(rows))
        if choice.threshold is None:
            self.progress.note(f"{self.name}/{config.name}: no abstention threshold could be calibrated")
        return choice.threshold

    def _answering(self, served: Served, config: EvalConfig, answer_format: str) -> Pipeline:
        """The pipeline of one free-form answer format (structured: abstaining below the calibrated threshold)."""
        fmt = next(f for f in ANSWER_FORMATS if f == answer_format)
        llm = format_settings(self.llm_endpoint(), fmt).model_copy(
            update={"max_tokens": self.options.answer_max_tokens}
        )
        threshold = self.abstain_below(config) if fmt == "structured" else None
        return served.variant(llm, GroundingSettings(abstain_below=threshold))

    async def run_config(self, config: EvalConfig, llm: LLMClient | None) -> None:
        """Ask every pending question of ``config`` and log the rows."""
        todo = self.pending(config)
        if not todo:
            return
        if config.retrieves:
            self.federation(config)  # built (its own progress step) before the steps that count questions
        if config.router == "learned" and config.kind == "federated":
            await self.train_router(config.partition)
        self.progress.start(f"{self.name}: {config.name}", len(todo))
        if config.kind == "no-rag":
            if llm is None:
                raise ConfigError("the no-rag configuration needs an LLM (--llm-url, or the embedded one)")
            for kind, question in todo:
                self.log.append(await self._no_rag(config, kind, question, llm))
                self.progress.advance()
            return
        async with self.pipeline(config, llm) as served:
            federation = self.federation(config)
            pipelines: dict[str, Pipeline] = {}  # per kind of answer, made when first needed
            for kind, question in todo:
                if kind == "retrieval":
                    row = await self._retrieval(config, question, served.pipeline, federation)
                elif kind == "calibration":
                    row = await self._calibration(config, question, served.pipeline)
                elif kind.startswith("answer:"):
                    if kind not in pipelines:  # after every calibration row: they come first
                        pipelines[kind] = self._answering(served, config, kind.removeprefix("answer:"))
                    row = await self._free_form(config, kind, question, pipelines[kind])
                else:
                    if kind not in pipelines:
                        # multiple choice and code are graded on what the model writes: no abstention
                        pipelines[kind] = served.variant(self._kind_llm(kind), GroundingSettings(abstain_below=None))
                    row = await self._answer(config, kind, question, pipelines[kind])
                self.log.append(row)
                self.progress.advance()

    def _row(self, config: EvalConfig, kind: str, question_id: str, dataset: str, question: str) -> dict[str, Any]:
        return {
            "suite": self.name,
            "config": config.name,
            "kind": kind,
            "id": question_id,
            "dataset": dataset,
            "question": question,
        }

    async def _retrieval(
        self, config: EvalConfig, q: RetrievalQuestion, pipeline: Pipeline, federation: BuiltFederation
    ) -> dict[str, Any]:
        row = self._row(config, "retrieval", q.id, q.dataset, q.question)
        retrieval = await pipeline.retrieve(q.question)
        docs = _doc_ids(retrieval.ranked, self.options.k)
        asked = [o.silo for o in retrieval.outcomes]
        relevant = federation.silos_holding(q.gold_doc_ids)
        row.update(
            gold=sorted(q.gold_doc_ids),
            retrieved=docs,
            passages=[passage_key(p) for p in retrieval.ranked],
            recall=recall_at_k(docs, q.gold_doc_ids, self.options.k),
            ndcg=ndcg_at_k(docs, q.gold_doc_ids, self.options.k),
            silos_asked=asked,
            silos_relevant=sorted(relevant),
            silos_total=len(federation.silo_docs),
            silo_recall=silo_recall(asked, relevant),
            best_score=retrieval.best_score,
            split="answer" if q.id in self._answered_ids else "calibration",
            **_costs(retrieval.timings_ms, retrieval.outcomes, config),
        )
        return row

    async def _calibration(self, config: EvalConfig, q: RetrievalQuestion, pipeline: Pipeline) -> dict[str, Any]:
        """An unanswerable calibration question: only its best retrieval score matters."""
        row = self._row(config, "calibration", q.id, q.dataset, q.question)
        retrieval = await pipeline.retrieve(q.question)
        row.update(
            gold=sorted(q.gold_doc_ids),
            retrieved=_doc_ids(retrieval.ranked, self.options.k),
            best_score=retrieval.best_score,
            **_costs(retrieval.timings_ms, retrieval.outcomes, config),
        )
        return row

    async def _free_form(
        self, config: EvalConfig, kind: str, q: RetrievalQuestion, pipeline: Pipeline
    ) -> dict[str, Any]:
        """A retrieval or unanswerable question answered in one format (``kind`` is ``answer:<format>``)."""
        row = self._row(config, kind, q.id, q.dataset, q.question)
        row.update(answerable=q.id in self._answered_ids, gold=sorted(q.gold_doc_ids))
        try:
            response = await pipeline.answer(q.question, max_tokens=self.options.answer_max_tokens)
        except FedragError as exc:
            row.update(error=f"{exc.code}: {exc}")
            return row
        row.update(answer_fields(response))
        return row

    async def _answer(self, config: EvalConfig, kind: str, q: Any, pipeline: Pipeline) -> dict[str, Any]:
        question, choices, max_tokens = self._prompt(kind, q)
        row = self._row(config, kind, q.id, q.dataset, question)
        try:
            response = await pipeline.answer(question, choices=choices, max_tokens=max_tokens)
        except FedragError as exc:
            row.update(error=f"{exc.code}: {exc}")
            return row
        fields = answer_fields(response)
        row.update(
            {key: fields[key] for key in _ANSWER_KEYS},
            citation_validity=citation_validity(
                [c.number for c in response.citations if c.cited] + response.invalid_citations,
                [c.number for c in response.citations],
            ),
            silos_total=len(response.trace.silos),
        )
        row.update(grade(q, response.answer, response.choice))
        return row

    async def _no_rag(self, config: EvalConfig, kind: str, q: Any, llm: LLMClient) -> dict[str, Any]:
        question, choices, max_tokens = self._prompt(kind, q)
        row = self._row(config, kind, q.id, q.dataset, question)
        generator = Generator(llm, self._kind_llm(kind))  # the gateway's generation, without sources
        started = time.perf_counter()
        generated: Generated | None = None
        try:
            async for event in generator.stream(
                question, [], choices=choices, allow_no_context=True, max_tokens=max_tokens
            ):
                if isinstance(event, Generated):
                    generated = event
        except FedragError as exc:
            row.update(error=f"{exc.code}: {exc}")
            return row
        if generated is None:
            row.update(error="llm_invalid_reply: the answer stream ended without an answer")
            return row
        parsed = generated.parsed
        row.update(
            answer=parsed.answer,
            reasoning=parsed.reasoning[:REASONING_LOG_CHARS],
            answer_format=generated.answer_format,
            well_formed=generated.well_formed,
            finish_reason=generated.finish_reason,
            loop_detected=generated.loop_field is not None,
            timings_ms={"generate": (time.perf_counter() - started) * 1000},
            bytes=0,
            llm_tokens={"prompt": generated.prompt_tokens, "completion": generated.completion_tokens},
            silos_asked=[],
        )
        row.update(grade(q, parsed.answer, parsed.choice))
        return row

    def _prompt(self, kind: str, q: Any) -> tuple[str, list[str] | None, int]:
        question, choices = pose(q)
        return question, choices, self.options.mc_max_tokens if kind == "mc" else self.options.code_max_tokens


# What a multiple-choice or code row keeps of the answer (free-form rows keep every answer field).
_ANSWER_KEYS = (
    "answer", "reasoning", "cited", "sources", "finish_reason", "well_formed", "loop_detected", "silos_asked",
    "timings_ms", "bytes", "llm_tokens", "partial",
)  # fmt: skip


def _costs(timings: dict[str, float], outcomes: Sequence[Any], config: EvalConfig) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == "ok"]
    costs: dict[str, Any] = {
        "timings_ms": dict(timings),
        "bytes": sum(o.bytes_sent + o.bytes_received for o in outcomes),
        "partial": any(o.status != "ok" for o in outcomes),
        "failures": {o.silo: f"{o.status}: {o.detail}" for o in outcomes if o.status != "ok"},
    }
    if config.noisy_epsilon is not None:
        # what each answering silo's accountant charged this gateway for the search
        costs["epsilon"] = {o.silo: config.noisy_epsilon for o in ok}
    return costs


async def run_suite(
    options: RunOptions, suite: str, encoder: Encoder, log: QuestionLog, progress: Progress, llm: LLMClient | None
) -> SuiteData:
    """Run every configuration of ``options`` on ``suite``; rows go to ``log``."""
    answering = any(options.answers(c) for c in options.configs)
    if suite == OWN_SUITE and options.corpus is not None and options.questions is not None:
        data = load_own_suite(
            options.corpus,
            options.questions,
            silo_field=options.silo_field,
            retrieval_limit=options.retrieval_limit,
            seed=options.seed,
        )
    else:
        data = _packaged_suite(options, suite, answering)
    for reason in data.skipped:
        progress.note(f"skipped: {reason}")
    caching = encoder if isinstance(encoder, CachingEncoder) else CachingEncoder(encoder, options.out / "cache")
    run = SuiteRun(options, data, caching, log, progress)
    for config in options.configs:
        await run.run_config(config, llm)
    caching.save()
    return data


def _packaged_suite(options: RunOptions, suite: str, answering: bool) -> SuiteData:
    return load_suite(
        suite,
        retrieval_limit=options.retrieval_limit,
        mc_limit=options.mc_limit,
        code_limit=options.code_limit,
        docs_per_corpus=options.docs_per_corpus,
        seed=options.seed,
        abstain_limit=options.abstain_limit if answering else 0,
        calibration_limit=options.calibration_limit if answering else 0,
    )


def write_run_file(options: RunOptions) -> None:
    """Record the run's options; refuse to resume a directory that holds a different run."""
    path = options.out / "run.json"
    identity = options.identity()
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("identity") != identity:
            before = saved.get("identity", {})
            changed = sorted(k for k in {*identity, *before} if before.get(k) != identity.get(k))
            raise ConfigError(
                f"{options.out} holds a run with other settings ({', '.join(changed)}): "
                "choose another --out, or --restart to discard it"
            )
        return
    options.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"identity": identity, "started": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))


def iter_suites(spec: str) -> Iterator[str]:
    """Suite names of ``--suite`` (``medical``, ``code`` or ``all``)."""
    from eval.suites import SUITES

    names = list(SUITES) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        if name not in SUITES:
            raise ConfigError(f"unknown suite '{name}': choose from {', '.join(SUITES)} or 'all'")
        yield name
