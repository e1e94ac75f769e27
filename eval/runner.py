"""Run every configuration over the same questions and log one row per (configuration, question).

For each suite the runner draws the questions and documents (:mod:`eval.suites`), builds
the central index and the partitions the configurations need (:mod:`eval.builder`, cached
under ``OUT/federations``), trains the learned router of each partition on questions
disjoint from the evaluation questions, then serves each configuration's silos and asks
its questions through the gateway's own :class:`gateway.pipeline.Pipeline`. Rows go to
``OUT/questions.jsonl`` as they are produced (:class:`eval.records.QuestionLog`), so an
interrupted run continues where it stopped.
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

from aggregation import Passage, make_merger
from eval.builder import BuiltFederation, ServeMode, build_federation, serve_silos
from eval.configs import EvalConfig
from eval.datasets import CodeProblem, MultipleChoiceQuestion, RetrievalQuestion
from eval.embedding_cache import CachingEncoder
from eval.metrics import citation_validity, ndcg_at_k, recall_at_k, silo_recall
from eval.partition import PartitionName, document_vectors, partition_documents
from eval.records import QuestionLog
from eval.sandbox import extract_completion, humaneval_program, run_code_check
from eval.suites import SuiteData, corpus_description, load_suite
from federation.config import (
    ChunkingSettings,
    DPSettings,
    GatewaySettings,
    LLMEndpointSettings,
    RetrievalSettings,
)
from federation.encoder import Encoder
from federation.errors import ConfigError, FedragError
from federation.identity import Identity
from federation.signing import RequestSigner
from gateway.app import llm_settings
from gateway.fanout import SiloPool
from gateway.llm_client import LLMClient
from gateway.pipeline import ExecutorRun, Pipeline
from gateway.prompting import build_messages, parse_answer
from gateway.router_training import label_questions, train_router
from router import make_router

__all__ = ["Progress", "RunOptions", "run_suite"]

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, "
    "including its signature, in one ```python code block."
)


class Progress:
    """Progress callbacks (the CLI draws bars; tests pass this no-op)."""

    def start(self, description: str, total: int) -> None:
        """A step with ``total`` units begins."""

    def advance(self, units: int = 1) -> None:
        """``units`` more units are done."""

    def note(self, message: str) -> None:
        """A line worth showing."""


_IDENTITY_FIELDS = (
    "llm_model", "retrieval_limit", "mc_limit", "code_limit", "docs_per_corpus", "silos", "k", "k_per_silo",
    "max_silos", "router_training_questions", "mc_max_tokens", "code_max_tokens", "context_tokens", "seed",
)  # fmt: skip


@dataclass(frozen=True)
class RunOptions:
    """What a run asks (the part that decides its questions and answers is kept in ``OUT/run.json``)."""

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
    llm_timeout_s: float = 300.0
    serve_mode: ServeMode = "inprocess"
    seed: int = 0

    def identity(self) -> dict[str, Any]:
        """The options that decide questions and answers: a resumed run must use the same."""
        return {key: getattr(self, key) for key in _IDENTITY_FIELDS}


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
    async def pipeline(self, config: EvalConfig, llm: LLMClient | None) -> AsyncIterator[tuple[Pipeline, SiloPool]]:
        """A pipeline over the configuration's silos, served as the options say."""
        federation = self.federation(config)
        dp = None
        if config.dp_epsilon is not None:
            dp = DPSettings(enabled=True, epsilon_per_query=config.dp_epsilon, budget_per_window=1e12)
        router_model = self.router_model(config.partition) if config.router == "learned" else None
        settings = self.gateway_settings(federation, config, router_model)
        cfg = settings.retrieval
        router = make_router(
            cfg.router, threshold=cfg.router_threshold, top_m=cfg.router_top_m, model_path=router_model
        )
        run = ExecutorRun()
        async with serve_silos(federation, mode=self.options.serve_mode, dp=dp, encoder=self.encoder) as (
            membership,
            transports,
        ):
            signer = RequestSigner(Identity.load(federation.gateway_key_file))
            pool = SiloPool(membership, signer, cfg, transports=transports)
            client = llm or LLMClient(llm_settings(settings))
            try:
                await pool.refresh_cards(force=True)
                yield (
                    Pipeline(
                        settings,
                        encoder=self.encoder.inner,
                        pool=pool,
                        router=router,
                        merger=make_merger(cfg.merger),
                        llm=client,
                        executor_run=run,
                    ),
                    pool,
                )
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
            llm=LLMEndpointSettings(
                base_url=o.llm_url or "http://127.0.0.1:9",
                model=o.llm_model,
                timeout_s=o.llm_timeout_s,
                max_tokens=o.mc_max_tokens,
                temperature=0.0,
                context_tokens=o.context_tokens,
            ),
            retrieval=RetrievalSettings(
                router=config.router if config.kind == "federated" else "all",
                router_model=router_model,
                max_silos=o.max_silos if config.router != "all" else 256,
                k_per_silo=o.k_per_silo,
                k=o.k,
                merger=config.merger,
                deadline_s=30.0,
                breaker_failures=1000,
            ),
        )

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
        async with self.pipeline(config, None) as (_, pool):
            examples = await label_questions(
                questions, encoder=self.encoder, pool=pool, k=self.options.k, on_question=self.progress.advance
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
        return [(kind, q) for kind, q in todo if (self.name, config.name, kind, q.id) not in self.log]

    async def run_config(self, config: EvalConfig, llm: LLMClient | None) -> None:
        """Ask every pending question of ``config`` and log the rows."""
        todo = self.pending(config)
        if not todo:
            return
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
        async with self.pipeline(config, llm) as (pipeline, _):
            federation = self.federation(config)
            for kind, question in todo:
                if kind == "retrieval":
                    row = await self._retrieval(config, question, pipeline, federation)
                else:
                    row = await self._answer(config, kind, question, pipeline)
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
            **_costs(retrieval.timings_ms, retrieval.outcomes, config),
        )
        return row

    async def _answer(self, config: EvalConfig, kind: str, q: Any, pipeline: Pipeline) -> dict[str, Any]:
        question, choices, max_tokens = self._prompt(kind, q)
        row = self._row(config, kind, q.id, q.dataset, question)
        try:
            response = await pipeline.answer(question, choices=choices, max_tokens=max_tokens)
        except FedragError as exc:
            row.update(error=f"{exc.code}: {exc}")
            return row
        trace = response.trace
        row.update(
            answer=response.answer,
            reasoning=response.reasoning[:2000],
            cited=[c.number for c in response.citations if c.cited],
            sources=[c.doc_id for c in response.citations],
            citation_validity=citation_validity(
                [c.number for c in response.citations if c.cited] + response.invalid_citations,
                [c.number for c in response.citations],
            ),
            silos_asked=[s.silo for s in trace.silos if s.outcome != "not_asked"],
            silos_total=len(trace.silos),
            timings_ms=trace.timings_ms,
            bytes=trace.bytes_exchanged,
            llm_tokens=trace.llm_tokens,
            partial=trace.partial,
        )
        row.update(self._grade(kind, q, response.answer, response.choice))
        return row

    async def _no_rag(self, config: EvalConfig, kind: str, q: Any, llm: LLMClient) -> dict[str, Any]:
        question, choices, max_tokens = self._prompt(kind, q)
        row = self._row(config, kind, q.id, q.dataset, question)
        started = time.perf_counter()
        try:
            result = await llm.chat(
                build_messages(question, [], choices=choices, allow_no_context=True), max_tokens=max_tokens
            )
        except FedragError as exc:
            row.update(error=f"{exc.code}: {exc}")
            return row
        parsed = parse_answer(result.content, reasoning_content=result.reasoning, source_numbers=[], choices=choices)
        row.update(
            answer=parsed.answer,
            reasoning=parsed.reasoning[:2000],
            timings_ms={"generate": (time.perf_counter() - started) * 1000},
            bytes=0,
            llm_tokens={"prompt": result.prompt_tokens, "completion": result.completion_tokens},
            silos_asked=[],
        )
        row.update(self._grade(kind, q, parsed.answer, parsed.choice))
        return row

    def _prompt(self, kind: str, q: Any) -> tuple[str, list[str] | None, int]:
        if kind == "mc":
            mc: MultipleChoiceQuestion = q
            return mc.question, list(mc.choices), self.options.mc_max_tokens
        problem: CodeProblem = q
        return f"{CODE_INSTRUCTION}\n\n```python\n{problem.prompt}```", None, self.options.code_max_tokens

    def _grade(self, kind: str, q: Any, answer: str, choice: str | None) -> dict[str, Any]:
        if kind == "mc":
            picked = LETTERS.index(choice) if choice and choice in LETTERS[: len(q.choices)] else None
            return {
                "choice": picked,
                "answer_index": q.answer,
                "correct": picked == q.answer,
                "unparseable": picked is None,
            }
        problem: CodeProblem = q
        completion = extract_completion(answer, problem.prompt, problem.entry_point)
        program = humaneval_program(problem.prompt, completion, problem.test, problem.entry_point)
        result = run_code_check(program)
        return {"passed": result.status == "passed", "sandbox": result.status, "sandbox_detail": result.detail[-500:]}


def _costs(timings: dict[str, float], outcomes: Sequence[Any], config: EvalConfig) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == "ok"]
    costs: dict[str, Any] = {
        "timings_ms": dict(timings),
        "bytes": sum(o.bytes_sent + o.bytes_received for o in outcomes),
        "partial": any(o.status != "ok" for o in outcomes),
        "failures": {o.silo: f"{o.status}: {o.detail}" for o in outcomes if o.status != "ok"},
    }
    if config.dp_epsilon is not None:
        # what each answering silo's accountant charged this gateway for the search
        costs["epsilon"] = {o.silo: config.dp_epsilon for o in ok}
    return costs


async def run_suite(
    options: RunOptions, suite: str, encoder: Encoder, log: QuestionLog, progress: Progress, llm: LLMClient | None
) -> SuiteData:
    """Run every configuration of ``options`` on ``suite``; rows go to ``log``."""
    data = load_suite(
        suite,
        retrieval_limit=options.retrieval_limit,
        mc_limit=options.mc_limit,
        code_limit=options.code_limit,
        docs_per_corpus=options.docs_per_corpus,
        seed=options.seed,
    )
    for reason in data.skipped:
        progress.note(f"skipped: {reason}")
    caching = encoder if isinstance(encoder, CachingEncoder) else CachingEncoder(encoder, options.out / "cache")
    run = SuiteRun(options, data, caching, log, progress)
    for config in options.configs:
        await run.run_config(config, llm)
    caching.save()
    return data


def write_run_file(options: RunOptions) -> None:
    """Record the run's options; refuse to resume a directory that holds a different run."""
    path = options.out / "run.json"
    identity = options.identity()
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("identity") != identity:
            changed = sorted(k for k in identity if saved.get("identity", {}).get(k) != identity[k])
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
