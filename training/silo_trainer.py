"""What one silo does in a federated round: build its examples, train, evaluate, account.

This is the ClientApp's work without Flower: the Flower handlers in
:mod:`training.client_app` only translate messages. Everything stays in the silo: the
examples (cached in ``DIR/training/``), the model, and the record-level privacy ledger
(``DIR/training/ledger.jsonl``, appended and fsynced before an update leaves, so a crash
never forgets epsilon that was spent). Only the adapter arrays and a few numbers go back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federation.config import TrainRunSettings
from federation.errors import BudgetExhausted, Forbidden, ValidationFailed
from federation.files import atomic_target
from training.base_model import hf_model_dir
from training.examples import (
    ExampleSettings,
    TrainingExample,
    build_examples,
    questions_from_documents,
    read_qa_pairs,
    split_examples,
)
from training.local import AdapterModel, AdapterSpec, Method, Optimisation, RecordDP, TrainResult
from training.silo_corpus import LocalSiloCorpus

logger = logging.getLogger(__name__)

TRAINING_DIR = "training"
LEDGER_FILE = "ledger.jsonl"
_METHODS: dict[str, Method] = {
    "fedavg-lora": "lora",
    "ffa-lora": "ffa-lora",
    "flora": "flora",
    "prompt-avg": "prompt",
    "prompt-cluster": "prompt",
}


def adapter_spec(settings: TrainRunSettings, *, seed_offset: int = 0) -> AdapterSpec:
    """The adapter a run trains (the same on the server and at every silo)."""
    a = settings.adapter
    return AdapterSpec(
        method=_METHODS[settings.strategy],
        rank=a.rank,
        alpha=a.alpha,
        target_modules=tuple(a.target_modules),
        virtual_tokens=a.virtual_tokens,
        seed=a.seed + seed_offset,
    )


@dataclass(frozen=True)
class SiloExamples:
    """A silo's examples for one run: what it trains on and what it evaluates on."""

    train: list[TrainingExample]
    held_out: list[TrainingExample]


def _example_to_json(example: TrainingExample) -> dict[str, Any]:
    data = asdict(example)
    data.pop("schema", None)
    return data


_QUESTION_DOCS = 20_000


def _all_first_chunks(corpus: LocalSiloCorpus) -> list[Any]:
    """Every document's first chunk (up to 20,000 documents), so questions cover the whole silo."""
    chunks: list[Any] = []
    while len(chunks) < _QUESTION_DOCS:
        page = corpus.first_chunks(offset=len(chunks), limit=1000)
        chunks.extend(page)
        if len(page) < 1000:
            break
    return chunks


def load_silo_examples(silo_dir: Path, settings: TrainRunSettings, corpus: LocalSiloCorpus) -> SiloExamples:
    """Build (or reuse from the silo's cache) the examples of this run's settings.

    The cache key covers the example settings and the silo's store version, so new or
    deleted documents give new examples.
    """
    local = settings.local
    limit = min(local.max_examples, corpus.settings.policy.training.max_examples)
    store_version = corpus.store_version()
    key = json.dumps(
        [
            local.sources,
            local.passage_chars,
            local.retrieval_order_share,
            local.qa_file,
            local.held_out,
            limit,
            settings.adapter.seed,
            store_version,
        ]
    )
    cache = Path(silo_dir) / TRAINING_DIR / f"examples-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if cache.is_file():
        data = json.loads(cache.read_text(encoding="utf-8"))
        return SiloExamples(
            train=[TrainingExample(**e) for e in data["train"]],
            held_out=[TrainingExample(**e) for e in data["held_out"]],
        )
    if local.qa_file:
        pairs = read_qa_pairs(Path(silo_dir) / local.qa_file)
    else:
        pairs = list(questions_from_documents(_all_first_chunks(corpus)))
    rng = np.random.default_rng(settings.adapter.seed)
    order = rng.permutation(len(pairs))
    pairs = [pairs[i] for i in order[:limit]]
    examples = build_examples(
        corpus,
        pairs,
        ExampleSettings(
            sources=local.sources,
            passage_chars=local.passage_chars,
            retrieval_order_share=local.retrieval_order_share,
            label=corpus.name,
            seed=settings.adapter.seed,
        ),
    )
    train, held = split_examples(examples, local.held_out, settings.adapter.seed)
    with atomic_target(cache) as tmp:
        tmp.write_text(
            json.dumps(
                {"train": [_example_to_json(e) for e in train], "held_out": [_example_to_json(e) for e in held]}
            ),
            encoding="utf-8",
        )
    logger.info("silo %s: %d training and %d held-out examples", corpus.name, len(train), len(held))
    return SiloExamples(train=train, held_out=held)


class PrivacyLedger:
    """The record-level epsilon a silo spent, per run: an append-only, fsynced JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def steps(self, run_id: str) -> int:
        """DP-SGD steps already taken in this run (on the same examples)."""
        if not self.path.is_file():
            return 0
        total = 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a torn last line after a crash: that round never sent its update
                continue
            if entry.get("run") == run_id:
                total += int(entry.get("steps", 0))
        return total

    def record(self, run_id: str, round_: int, steps: int, epsilon: float) -> None:
        """Append one round's DP-SGD steps and the run's epsilon so far, durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"run": run_id, "round": round_, "steps": steps, "epsilon": epsilon}) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def projected_epsilon(dp: RecordDP, sample_rate: float, steps: int) -> float:
    """Opacus' RDP epsilon after ``steps`` DP-SGD steps at ``sample_rate``."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history.append((dp.noise_multiplier, sample_rate, steps))
    return float(accountant.get_epsilon(delta=dp.delta))


@dataclass(frozen=True)
class RoundOutcome:
    """A silo's round: the arrays it sends and its numbers."""

    arrays: dict[str, np.ndarray]
    result: TrainResult
    held_out_loss_before: float
    scaling: float


class SiloTrainer:
    """Train and evaluate one silo's adapter, with the silo's policy enforced.

    Args:
        silo_dir: the silo's data directory.
        model_dir: the base model (transformers directory; default: the cached conversion).

    Raises:
        Forbidden: the silo's policy does not allow training.
    """

    def __init__(self, silo_dir: Path, *, model_dir: Path | None = None) -> None:
        self.silo_dir = Path(silo_dir)
        self.corpus = LocalSiloCorpus(self.silo_dir)
        self.policy = self.corpus.settings.policy.training
        self.model_dir = model_dir or hf_model_dir()
        self.ledger = PrivacyLedger(self.silo_dir / TRAINING_DIR / LEDGER_FILE)

    def close(self) -> None:
        """Release the silo's store and index."""
        self.corpus.close()

    def _record_dp(self, settings: TrainRunSettings) -> RecordDP | None:
        dp = settings.record_dp
        if not dp.enabled:
            if self.policy.require_record_dp:
                raise Forbidden(
                    f"silo '{self.corpus.name}' trains only with record-level DP (policy.training.require_record_dp); "
                    "enable record_dp in the run's config",
                    code="record_dp_required",
                )
            return None
        return RecordDP(noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm, delta=dp.delta)

    def _model(self, settings: TrainRunSettings, arrays: dict[str, np.ndarray], round_: int) -> AdapterModel:
        spec = adapter_spec(settings, seed_offset=round_ if settings.strategy == "flora" else 0)
        model = AdapterModel(self.model_dir, spec, threads=settings.local.threads)
        if settings.strategy == "flora":
            model.merge_global_stack(arrays)  # the global update so far; a fresh LoRA trains on top
        else:
            known = set(model.array_names())
            model.load({n: v for n, v in arrays.items() if n in known})
        return model

    def train(
        self, settings: TrainRunSettings, arrays: dict[str, np.ndarray], *, run_id: str, round_: int
    ) -> RoundOutcome:
        """One round: load the global arrays, train on the silo's examples, return the new arrays."""
        dp = self._record_dp(settings)
        examples = load_silo_examples(self.silo_dir, settings, self.corpus)
        model = self._model(settings, arrays, round_)
        optimisation = Optimisation(
            learning_rate=settings.local.learning_rate,
            epochs=settings.local.epochs,
            batch_size=settings.local.batch_size,
            max_steps=settings.local.max_steps,
            max_length=settings.local.max_length,
            citation_weight=settings.local.citation_weight,
        )
        steps_before = 0
        if dp is not None:
            steps_before = self.ledger.steps(run_id)
            fitting = len(model.encode(examples.train, optimisation.max_length))
            batch = min(optimisation.batch_size, max(fitting, 1))
            steps = max(1, int(np.ceil(optimisation.epochs * fitting / batch)))
            if optimisation.max_steps:
                steps = min(steps, optimisation.max_steps)
            epsilon = projected_epsilon(dp, batch / max(fitting, 1), steps_before + steps)
            if epsilon > self.policy.max_epsilon:
                raise BudgetExhausted(
                    f"silo '{self.corpus.name}': this round would bring the run's record-level epsilon to "
                    f"{epsilon:.2f}, over the silo's limit of {self.policy.max_epsilon:g}",
                    code="training_budget_spent",
                )
        before = (
            model.loss(examples.held_out, max_length=optimisation.max_length) if examples.held_out else float("nan")
        )
        result = model.train(
            examples.train,
            optimisation,
            dp=dp,
            dp_steps_before=steps_before,
            seed=settings.adapter.seed + 7919 * round_,
        )
        if dp is not None and result.epsilon is not None:
            self.ledger.record(run_id, round_, result.steps, result.epsilon)
        arrays_out, scaling = model.arrays(), model.spec.scaling
        return RoundOutcome(arrays=arrays_out, result=result, held_out_loss_before=before, scaling=scaling)

    def evaluate(self, settings: TrainRunSettings, arrays: dict[str, np.ndarray]) -> tuple[int, float]:
        """(held-out examples, mean loss) of the global arrays on the silo's held-out documents."""
        examples = load_silo_examples(self.silo_dir, settings, self.corpus)
        if not examples.held_out:
            raise ValidationFailed(
                f"silo '{self.corpus.name}' has no held-out examples to evaluate on (local.held_out is 0 "
                "or the silo is too small)",
                code="no_examples",
            )
        model = self._model(settings, arrays, 0)
        return len(examples.held_out), model.loss(examples.held_out, max_length=settings.local.max_length)


__all__ = [
    "LEDGER_FILE",
    "TRAINING_DIR",
    "PrivacyLedger",
    "RoundOutcome",
    "SiloExamples",
    "SiloTrainer",
    "adapter_spec",
    "load_silo_examples",
    "projected_epsilon",
]
