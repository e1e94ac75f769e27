"""Federated training benchmark (issue 9): quality and cost of federated adapters, side by side.

Training silos are built from packaged ontology documents that the evaluation suite's
federation does not hold: the medical suite is drawn with the evaluation options used below
(``load_suite``), and every document it ingests, every gold document of its questions
(retrieval and calibration) and every document sharing a title with one it ingests is left
out. Three training silos (``mondo``, ``hpo``, ``uberon``; with ``--code-silo`` a fourth, ``python``, of
Python documentation that the code suite does not draw), a ``central`` silo holding the training
silos' documents together (the upper bound), and a silo (``cl``, trained on by nobody) whose
retrieval-grounded examples (``training.examples``) measure held-out loss.

Adapters are trained with Flower's deployment engine (``training.cli.run_training``: a
SuperLink and one SuperNode per silo on loopback, TLS and node authentication on):

- ``ffa-lora`` (the federated adapter), ``fedavg-lora``, ``flora``, ``prompt-avg`` on the training silos;
- ``one-silo``: FFA-LoRA on ``mondo`` alone (a 1-silo deployment, min_nodes 1);
- ``central``: FFA-LoRA on the ``central`` silo, with 3x the examples and steps of one silo;
- ``ffa-lora+record-dp`` (DP-SGD in each silo, noise 1.0) and ``ffa-lora+client-dp`` (Flower's
  fixed-clipping client-level DP at the server), the cost of DP next to plain FFA-LoRA.

Then (each step is skipped when its output exists, so an interrupted run resumes):

1. held-out loss of the base model and of each adapter on the ``cl`` examples, in process
   (``training.local.AdapterModel``), per example, with 95% bootstrap intervals and the paired
   difference to the base model;
2. each LoRA adapter exported to GGUF and served by the embedded llama.cpp server in
   ``fedrag eval run --lora NAME=FILE`` (medical suite, ``fed-all``, structured answers, the same
   questions for every adapter): well-formed, citation, gold-citation and supported-claim rates
   with intervals, and the paired gold-citation difference to the base model; once with the
   sources in retrieval order and once shuffled (``--source-order shuffled``, a position-bias
   probe; ``--source-orders`` picks). ``--eval-seeds`` evaluates more draws of questions and
   documents (a draw holding a document some adapter trained on is refused) and pools their
   paired differences, against the base model and against the one-silo adapter. Soft prompts
   cannot be served by llama.cpp: they get only the held-out loss;
3. cost: bytes per silo per round up and down, full fine-tuning bytes, round seconds, epsilon.

Example (the figures in bench/RESULTS.md)::

    .venv/bin/python bench/bench_training.py --work .bench/training
    .venv/bin/python bench/bench_training.py --work .bench/training --only ffa-lora,one-silo --skip-eval
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.metrics import bootstrap_ci, interval  # noqa: E402
from federation.config import TrainRunSettings, load_silo_settings, write_silo_settings  # noqa: E402

TRAIN_SILOS = ("mondo", "hpo", "uberon")
CODE_SILO = "python"  # --code-silo: a fourth training silo of Python documentation (the code suite's domain)
SILO_CORPUS = {CODE_SILO: "python-docs"}  # a silo's corpus, where it is not the silo's name
HELD_OUT_SILO = "cl"
CENTRAL = "central"
ONE_SILO = "one-silo"  # FFA-LoRA on one silo: the baseline the federated adapter must beat

# The evaluation run every adapter is measured with (the documents it ingests are excluded from training).
EVAL = {
    "limit": 40,
    "docs_per_corpus": 100,
    "answer_limit": 20,
    "calibration_limit": 20,
    "abstain_limit": 0,
    "context_tokens": 1024,
    "seed": 0,
    "suite": "medical",
}


@dataclass(frozen=True)
class TrainConfig:
    """One training run of the benchmark."""

    name: str
    strategy: str
    silos: tuple[str, ...]
    record_dp: bool = False
    client_dp: bool = False
    scale: int = 1  # examples and steps per round, times one silo's (central: 3)
    note: str = ""

    @property
    def lora(self) -> bool:
        return not self.strategy.startswith("prompt")


def train_configs(silos: tuple[str, ...] = TRAIN_SILOS) -> tuple[TrainConfig, ...]:
    """The training configurations over the federated training ``silos``."""
    fed = f"federated, {len(silos)} silos"
    return (
        TrainConfig("ffa-lora", "ffa-lora", silos, note=fed),
        TrainConfig(ONE_SILO, "ffa-lora", ("mondo",), note="FFA-LoRA on mondo alone"),
        TrainConfig(CENTRAL, "ffa-lora", (CENTRAL,), scale=3, note=f"one silo with all {len(silos)} silos' documents"),
        TrainConfig("fedavg-lora", "fedavg-lora", silos, note=fed),
        TrainConfig("flora", "flora", silos, note=fed),
        TrainConfig("prompt-avg", "prompt-avg", silos, note=fed),
        TrainConfig("ffa-lora+record-dp", "ffa-lora", silos, record_dp=True, note="DP-SGD noise 1.0"),
        TrainConfig("ffa-lora+client-dp", "ffa-lora", silos, client_dp=True, note="client-level DP"),
    )


EVALUATED_DEFAULT = ("ffa-lora", ONE_SILO, CENTRAL, "fedavg-lora", "flora")


@dataclass
class Bench:
    """Paths and options of one benchmark directory."""

    work: Path
    docs_per_silo: int
    rounds: int
    max_examples: int
    max_steps: int
    batch_size: int
    learning_rate: float
    loss_examples: int
    sources: int
    passage_chars: int
    retrieval_order_share: float
    citation_weight: float
    train_silos: tuple[str, ...] = TRAIN_SILOS
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def fed(self) -> Path:
        return self.work / "fed"

    def silo_dir(self, name: str) -> Path:
        return self.fed / "silos" / name

    def run_dir(self, name: str) -> Path:
        return self.work / "runs" / name


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# data ---------------------------------------------------------------------------------
def eval_draw(suite: str) -> Any:
    """The documents and questions ``fedrag eval run`` draws with the benchmark's evaluation options."""
    from eval.suites import load_suite

    return load_suite(
        suite,
        retrieval_limit=EVAL["limit"],
        mc_limit=0,
        code_limit=0,
        docs_per_corpus=EVAL["docs_per_corpus"],
        seed=EVAL["seed"],
        abstain_limit=EVAL["abstain_limit"],
        calibration_limit=EVAL["calibration_limit"],
    )


def eval_exclusions() -> tuple[set[str], set[str]]:
    """Document ids and titles the evaluation's suites (medical and code) ingest or ask about."""
    ids: set[str] = set()
    titles: set[str] = set()
    for suite in ("medical", "code"):
        data = eval_draw(suite)
        ids |= {d.doc_id for d in data.documents}
        for q in [*data.retrieval, *data.unanswerable, *data.calibration]:
            ids |= set(q.gold_doc_ids)
        titles |= {d.title.casefold() for d in data.documents if d.title}
    return ids, titles


def build_data(bench: Bench) -> dict[str, Any]:
    """Build the training federation: the training silos, the central one, the held-out one."""
    from eval.builder import build_federation
    from eval.embedding_cache import CachingEncoder
    from federation.encoder import SentenceTransformerEncoder
    from silo_node.corpora import load_corpus

    manifest = bench.work / "data.json"
    started = time.perf_counter()
    excluded_ids, excluded_titles = eval_exclusions()
    parts: dict[str, list[Any]] = {}
    for silo in (*bench.train_silos, HELD_OUT_SILO):
        corpus = SILO_CORPUS.get(silo, silo)
        pool = [
            d
            for d in load_corpus(corpus)
            if d.doc_id not in excluded_ids and (d.title or "").casefold() not in excluded_titles
        ]
        picked = sorted(random.Random(f"bench-training:{corpus}").sample(range(len(pool)), bench.docs_per_silo))
        parts[silo] = [pool[i] for i in picked]
    parts[CENTRAL] = [d for silo in bench.train_silos for d in parts[silo]]
    held = {d.doc_id for docs in parts.values() for d in docs}
    overlap = held & excluded_ids
    if overlap:
        raise RuntimeError(f"training documents overlap the evaluation's: {sorted(overlap)[:5]}")
    encoder = CachingEncoder(SentenceTransformerEncoder(), bench.work / "cache")
    build_federation(bench.fed, parts, encoder, index_backend="exact")
    encoder.save()
    for name in parts:  # the operators' consent: these silos take part in training, without mandatory DP-SGD
        settings = load_silo_settings(bench.silo_dir(name))
        settings.policy.training.allowed = True
        settings.policy.training.require_record_dp = False
        write_silo_settings(bench.silo_dir(name), settings)
    info = {
        "silos": {name: len(docs) for name, docs in parts.items()},
        "eval_documents_excluded": len(excluded_ids),
        "overlap_with_eval": len(overlap),
        "seconds": round(time.perf_counter() - started, 1),
    }
    manifest.write_text(json.dumps(info, indent=1), encoding="utf-8")
    log(f"training federation: {info}")
    return info


# training -----------------------------------------------------------------------------
def train_settings(bench: Bench, config: TrainConfig) -> TrainRunSettings:
    """The run's settings (what ``fedrag train run --config`` would read)."""
    settings: dict[str, Any] = {
        "strategy": config.strategy,
        "rounds": bench.rounds,
        "output": str(bench.run_dir(config.name)),
        "local": {
            "max_examples": bench.max_examples * config.scale,
            "max_steps": bench.max_steps * config.scale,
            "batch_size": bench.batch_size,
            "sources": bench.sources,
            "passage_chars": bench.passage_chars,
            "retrieval_order_share": bench.retrieval_order_share,
            "citation_weight": bench.citation_weight,
            "learning_rate": bench.learning_rate,
            "threads": 1,
        },
        "deployment": {
            "min_nodes": len(config.silos),
            "silos": [{"name": s, "dir": str(bench.silo_dir(s))} for s in config.silos],
        },
    }
    if config.record_dp:
        settings["record_dp"] = {"enabled": True, "noise_multiplier": 1.0}
    if config.client_dp:
        settings["client_dp"] = {"enabled": True}
    return TrainRunSettings(**settings)


def train(bench: Bench, config: TrainConfig) -> dict[str, Any]:
    """Run one configuration unless its report exists; export LoRA adapters to GGUF."""
    from training.cli import run_training
    from training.export import export_llamacpp_lora

    out = bench.run_dir(config.name)
    report_file = out / "report.json"
    if not report_file.is_file():
        settings = train_settings(bench, config)
        (out).mkdir(parents=True, exist_ok=True)
        (out / "settings.json").write_text(settings.model_dump_json(indent=1), encoding="utf-8")
        log(f"training {config.name} ({config.strategy} on {', '.join(config.silos)})")
        started = time.perf_counter()
        run_training(settings, force=True)  # force: a run that crashed half-way starts again
        (out / "wall.json").write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    report: dict[str, Any] = json.loads(report_file.read_text(encoding="utf-8"))
    gguf = out / "adapter.gguf"
    if config.lora and report.get("adapter") and not gguf.is_file():
        export_llamacpp_lora(out / "adapter", gguf)
    return report


# held-out loss ------------------------------------------------------------------------
def held_out_examples(bench: Bench) -> list[Any]:
    """Examples of the silo nobody trained on, built as each silo builds its own."""
    from training.examples import ExampleSettings, build_examples, questions_from_documents
    from training.silo_corpus import LocalSiloCorpus

    with LocalSiloCorpus(bench.silo_dir(HELD_OUT_SILO)) as corpus:
        pairs = list(questions_from_documents(corpus.first_chunks(limit=bench.docs_per_silo)))
        pairs = random.Random("bench-training:loss").sample(pairs, min(bench.loss_examples, len(pairs)))
        return build_examples(
            corpus,
            pairs,
            ExampleSettings(
                sources=bench.sources,
                passage_chars=bench.passage_chars,
                retrieval_order_share=bench.retrieval_order_share,
                label=corpus.name,
                seed=0,
            ),
        )


def _adapter_model(adapter_dir: Path | None) -> Any:
    """The base model with the saved adapter loaded (None: an untrained LoRA, B = 0: the base model)."""
    from safetensors.numpy import load_file

    from training.adapter_files import adapter_config
    from training.base_model import hf_model_dir
    from training.local import AdapterModel, AdapterSpec

    if adapter_dir is None:
        return AdapterModel(hf_model_dir(), AdapterSpec(method="lora"))
    cfg = adapter_config(adapter_dir)
    if cfg["peft_type"] == "LORA":
        spec = AdapterSpec(
            method="lora",
            rank=int(cfg["r"]),
            alpha=float(cfg["lora_alpha"]),
            target_modules=tuple(cfg["target_modules"]),
        )
    else:
        spec = AdapterSpec(method="prompt", virtual_tokens=int(cfg["num_virtual_tokens"]))
    model = AdapterModel(hf_model_dir(), spec)
    model.load({n: v for n, v in load_file(str(adapter_dir / "adapter_model.safetensors")).items()})
    return model


def held_out_losses(bench: Bench, names: Sequence[str]) -> dict[str, list[float]]:
    """Per-example held-out loss of the base model and each adapter (cached in ``WORK/loss.json``)."""
    path = bench.work / "loss.json"
    cached: dict[str, list[float]] = json.loads(path.read_text()) if path.is_file() else {}
    todo = [n for n in ("base", *names) if n not in cached]
    if not todo:
        return cached
    examples = held_out_examples(bench)
    log(f"held-out loss on {len(examples)} {HELD_OUT_SILO} examples: {', '.join(todo)}")
    for name in todo:
        started = time.perf_counter()
        model = _adapter_model(None if name == "base" else bench.run_dir(name) / "adapter")
        cached[name] = [model.loss([e]) for e in examples]
        path.write_text(json.dumps(cached), encoding="utf-8")
        log(f"  {name}: {sum(cached[name]) / len(cached[name]):.4f} ({time.perf_counter() - started:.0f} s)")
    return cached


# evaluation ---------------------------------------------------------------------------
SOURCE_ORDERS = ("retrieval", "shuffled")


def eval_dir(bench: Bench, name: str, order: str, seed: int | None = None) -> Path:
    """Where the evaluation of one model (``base`` or an adapter) with one source order and draw goes."""
    seed = int(EVAL["seed"]) if seed is None else seed
    suffix = "" if order == "retrieval" else f"-{order}"
    if EVAL["suite"] != "medical":  # the medical suite's directories keep the names of earlier runs
        suffix += f"-{EVAL['suite']}"
    if seed != 0:  # so do seed 0's
        suffix += f"-seed{seed}"
    return bench.work / "eval" / f"{name}{suffix}"


def trained_documents(bench: Bench) -> tuple[set[str], set[str]]:
    """Document ids and titles of the silos some adapter trained on (every silo but the held-out one)."""
    from training.silo_corpus import LocalSiloCorpus

    ids: set[str] = set()
    titles: set[str] = set()
    for name in (*bench.train_silos, CENTRAL):
        if not bench.silo_dir(name).is_dir():
            continue
        with LocalSiloCorpus(bench.silo_dir(name)) as corpus:
            offset = 0
            while chunks := corpus.first_chunks(offset=offset, limit=500):
                ids |= {c.doc_id for c in chunks}
                titles |= {c.title.casefold() for c in chunks if c.title}
                offset += len(chunks)
    return ids, titles


def check_unseen(bench: Bench) -> None:
    """Refuse an evaluation draw that holds a document (or a title) an adapter was trained on.

    The training silos exclude the documents of the draw they were built against (``eval_exclusions``); a
    larger ``--answer-limit`` or another seed draws other questions, whose documents may be training ones.
    """
    data = eval_draw(str(EVAL["suite"]))
    ids, titles = trained_documents(bench)
    clash = sorted({d.doc_id for d in data.documents if d.doc_id in ids or (d.title or "").casefold() in titles})
    if clash:
        raise SystemExit(
            f"the evaluation draw (seed {EVAL['seed']}, {EVAL['limit']} questions) holds {len(clash)} document(s) "
            f"the adapters trained on ({', '.join(clash[:5])}): pick another --eval-seeds or --answer-limit"
        )


def eval_command(out: Path, gguf: Path | None, name: str | None, order: str) -> list[str]:
    """The ``fedrag eval run`` command of one adapter (None: the base model) and source order."""
    command = [
        str(Path(sys.executable).with_name("fedrag")), "eval", "run", "--suite", str(EVAL["suite"]),
        "--configs", "fed-all",
        "--llm-configs", "", "--answer-configs", "fed-all", "--answer-formats", "structured",
        "--limit", str(EVAL["limit"]), "--mc-limit", "0", "--code-limit", "0",
        "--docs-per-corpus", str(EVAL["docs_per_corpus"]), "--answer-limit", str(EVAL["answer_limit"]),
        "--abstain-limit", str(EVAL["abstain_limit"]), "--calibration-limit", str(EVAL["calibration_limit"]),
        "--context-tokens", str(EVAL["context_tokens"]), "--seed", str(EVAL["seed"]), "--out", str(out),
        "--source-order", order,
    ]  # fmt: skip
    if gguf is not None:
        command += ["--lora", f"{name}={gguf}"]
    return command


def _pin(cpus: int) -> None:
    if cpus > 0:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])


def evaluate(bench: Bench, name: str, order: str, cpus: int = 0) -> dict[str, Any] | None:
    """Run the evaluation with one adapter (``base``: none) and source order unless its results exist."""
    out = eval_dir(bench, name, order)
    results = out / "results.json"
    if not results.is_file():
        gguf = None if name == "base" else bench.run_dir(name) / "adapter.gguf"
        if gguf is not None and not gguf.is_file():
            log(f"no GGUF adapter for {name}: not evaluated")
            return None
        built = [eval_dir(bench, n, o) for n in ("base", name) for o in SOURCE_ORDERS]  # this draw's, done first
        base = next((d for d in built if d != out and (d / "results.json").is_file()), None)
        if base is not None and not out.exists():
            out.mkdir(parents=True)
            for shared in ("federations", "cache"):  # the same built federation and embeddings: no rebuild
                if (base / shared).exists():
                    shutil.copytree(base / shared, out / shared)
        command = eval_command(out, gguf, None if name == "base" else name, order)
        log(f"evaluating {name}: {' '.join(command[1:])}")
        started = time.perf_counter()
        # Pinned to `cpus` cores, the embedded server runs that many threads (it takes every core it may use):
        # llama.cpp's spinning threads slow down many times over on cores other jobs also use.
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, preexec_fn=lambda: _pin(cpus))
        (out / "wall.json").write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    return dict(json.loads(results.read_text(encoding="utf-8")))


def answer_rows(bench: Bench, name: str, order: str, seed: int | None = None) -> dict[str, dict[str, Any]]:
    """The structured answer rows of one evaluation, by question id."""
    path = eval_dir(bench, name, order, seed) / "questions.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: r for r in rows if r["kind"] == "answer:structured" and r.get("answerable")}


def pooled_rows(bench: Bench, name: str, order: str, seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
    """The answer rows of every draw that has them, by ``seed:question id``."""
    return {
        f"{seed}:{qid}": row
        for seed in seeds
        if (eval_dir(bench, name, order, seed) / "results.json").is_file()
        for qid, row in answer_rows(bench, name, order, seed).items()
    }


def _gold_cited(row: dict[str, Any]) -> float | None:
    """1/0 whether the answer cites a gold document; None when no gold document was among the sources."""
    if "error" in row or not set(row["gold"]) & set(row.get("sources") or []):
        return None
    return 1.0 if set(row.get("cited_docs") or []) & set(row["gold"]) else 0.0


def _only_gold(row: dict[str, Any]) -> float | None:
    """1/0 whether the answer cites gold documents and nothing else; None as :func:`_gold_cited`."""
    if _gold_cited(row) is None:
        return None
    cited = set(row.get("cited_docs") or [])
    return 1.0 if cited and cited <= set(row["gold"]) else 0.0


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float] | None:
    """Mean of ``a - b`` over paired items with its 95% bootstrap interval."""
    diffs = [x - y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    if not diffs:
        return None
    point, low, high = bootstrap_ci(diffs)
    return {"mean": point, "low": low, "high": high, "n": len(diffs)}


def paired_gold_citation(own: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """Gold-citation difference ``own - other`` over the questions where both were offered a gold source."""
    pairs = [(_gold_cited(own[q]), _gold_cited(other[q])) for q in other if q in own]
    kept = [(a, b) for a, b in pairs if a is not None and b is not None]
    return paired_difference([a for a, _ in kept], [b for _, b in kept])


# report -------------------------------------------------------------------------------
def _ci(value: dict[str, float] | None, digits: int = 2) -> str:
    if not value:
        return "–"
    return f"{value['mean']:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}] (n={value['n']})"


def _signed(value: dict[str, float] | None, digits: int = 2) -> str:
    if not value:
        return "–"
    return f"{value['mean']:+.{digits}f} [{value['low']:+.{digits}f}, {value['high']:+.{digits}f}] (n={value['n']})"


def _finite(values: Sequence[float] | None) -> list[float]:
    """The values that are numbers (an example longer than ``max_length`` has a NaN loss)."""
    return [v for v in values or [] if math.isfinite(v)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def answer_table(bench: Bench, evaluated: Sequence[str], order: str, seeds: Sequence[int]) -> list[str]:
    """The grounded-answer table of the evaluations with one source order, over the given draws (none: no lines)."""
    from eval.answer_quality import summarise_answers

    lines: list[str] = []
    rows = {n: pooled_rows(bench, n, order, seeds) for n in ("base", *evaluated)}
    names = [n for n, r in rows.items() if r]
    if not names:
        return lines
    shown = (
        "their merged rank, as the gateway sends them"
        if order == "retrieval"
        else "a seeded permutation of each prompt's sources, the same for every model (`--source-order shuffled`)"
    )
    drawn = f"draw (seed) {seeds[0]}" if len(seeds) == 1 else f"draws (seeds) {', '.join(map(str, seeds))} pooled"
    lines += [
        "",
        f"Grounded answers, sources in {order} order ({shown}): `fedrag eval run` on the {EVAL['suite']} suite, "
        f"{drawn} (`fed-all`, structured answers, {EVAL['answer_limit']} answerable questions per draw, the same "
        "for every adapter; the embedded llama.cpp server with the adapter as `--lora`). Rates with 95% bootstrap "
        "intervals; gold-citation differences paired by question.",
        "",
        "| model | well-formed | cites a source | gold-citation rate | vs base (paired) | vs one silo (paired) |"
        " gold not [1]: cited | cites only gold | sources cited / answer | supported claims | generate ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        own = rows[name]
        s = summarise_answers(list(own.values()))
        vs_base = _signed(paired_gold_citation(own, rows["base"])) if name != "base" and rows["base"] else "–"
        vs_one = _signed(paired_gold_citation(own, rows[ONE_SILO])) if name not in ("base", ONE_SILO) else "–"
        only = [v for v in (_only_gold(r) for r in own.values()) if v is not None]
        not_first = [v for r in own.values() if (v := _gold_cited(r)) is not None and r["sources"][0] not in r["gold"]]
        counts = [float(len(r.get("cited") or [])) for r in own.values() if r.get("generated")]
        lines.append(
            f"| {'base model' if name == 'base' else name} | {_ci(s['well_formed'])} | {_ci(s['citation_rate'])} | "
            f"{_ci(s['gold_citation_rate'])} | {vs_base} | {vs_one if rows.get(ONE_SILO) else '–'} | "
            f"{_ci(interval(not_first))} | {_ci(interval(only))} | {_ci(interval(counts), 1)} | "
            f"{_ci(s['supported_claims'])} | "
            f"{s['generate_ms']['mean'] if s['generate_ms'] else float('nan'):.0f} |"
        )
    return lines


def report(bench: Bench, configs: Sequence[TrainConfig], evaluated: Sequence[str], seeds: Sequence[int]) -> str:
    """The benchmark's tables (markdown), from what the work directory holds."""
    configs = [c for c in configs if (bench.run_dir(c.name) / "report.json").is_file()]
    reports = {c.name: json.loads((bench.run_dir(c.name) / "report.json").read_text()) for c in configs}
    losses = json.loads((bench.work / "loss.json").read_text()) if (bench.work / "loss.json").is_file() else {}
    lines: list[str] = []
    base_loss = losses.get("base")
    lines += [
        f"Held-out loss: mean reply-token cross-entropy on {len(base_loss or [])} retrieval-grounded examples of "
        f"the `{HELD_OUT_SILO}` silo, which no adapter trained on (95% bootstrap intervals; paired difference "
        "to the base model). In-silo: the training run's own held-out documents, after the last round.",
        "",
        "| adapter | trained on | held-out loss (cl, unseen) | vs base (paired) |"
        " in-silo held-out loss, before → after |",
        "|---|---|---|---|---|",
    ]
    if base_loss:
        lines.append(f"| base model | – | {_ci(interval(_finite(base_loss)), 4)} | – | – |")
    for c in configs:
        r = reports[c.name]
        per = losses.get(c.name)
        after = r["held_out_loss"][-1] if r["held_out_loss"] else None
        before = r.get("held_out_loss_before")
        lines.append(
            f"| {c.name} | {c.note} | {_ci(interval(_finite(per)), 4) if per else '–'} | "
            f"{_signed(paired_difference(per, base_loss), 4) if per and base_loss else '–'} | "
            f"{before if before is None else f'{before:.4f}'} → {after if after is None else f'{after:.4f}'} |"
        )
    for order in SOURCE_ORDERS:
        for seed in seeds:
            lines += answer_table(bench, evaluated, order, [seed])
        if len(seeds) > 1:
            lines += answer_table(bench, evaluated, order, seeds)
    # cost
    lines += [
        "",
        "Cost per round: bytes each silo sends up / receives down (mean over rounds; FLoRA's grow with the "
        "stack), against sending the full model (full fine-tuning); round seconds (mean) and the whole run; "
        "epsilon spent (record level: per silo, DP-SGD at delta 1e-5; client level: Flower's accountant).",
        "",
        "| run | rounds | up / silo / round | down / silo / round | full FT / round | up vs full FT | round s | run s |"
        " record ε | client ε | in-silo loss: before, after round 1, after last |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in configs:
        r = reports[c.name]
        up, down = _mean(r["bytes_up_per_silo"]), _mean(r["bytes_down_per_silo"])
        full = r["full_fine_tuning_bytes"]
        rec, cli = r.get("record_level_epsilon"), r.get("client_level_epsilon")
        curve = [r.get("held_out_loss_before"), *r["held_out_loss"]]
        shown = ", ".join("–" if v is None else f"{v:.4f}" for v in (curve[0], curve[1], curve[-1]))
        lines.append(
            f"| {c.name} | {r['rounds']} | {up:,.0f} | {down:,.0f} | {full:,} | {up / full:.5f} | "
            f"{_mean(r['round_seconds']):.0f} | {r['seconds']:.0f} | {'–' if rec is None else f'{rec:.2f}'} | "
            f"{'–' if cli is None else f'{cli:.2f}'} | {shown} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = TrainRunSettings().local
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "training", help="Work directory (resumable).")
    parser.add_argument("--only", default="all", help="Training configurations (comma list, or all).")
    parser.add_argument("--evaluate", default=",".join(EVALUATED_DEFAULT), help="LoRA runs evaluated with the LLM.")
    parser.add_argument("--skip-eval", action="store_true", help="Train and measure loss, no LLM evaluation.")
    parser.add_argument("--skip-loss", action="store_true", help="No in-process held-out loss.")
    parser.add_argument(
        "--source-orders",
        default=",".join(SOURCE_ORDERS),
        help="Source orders the answers are evaluated with: retrieval (as the gateway sends them), shuffled "
        "(a position-bias probe); comma list.",
    )
    parser.add_argument(
        "--eval-cpus",
        type=int,
        default=0,
        help="Pin the evaluation (and its LLM server's threads) to N cores (0: all).",
    )
    parser.add_argument("--docs-per-silo", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-examples", type=int, default=40, help="Examples per silo (central: 3x).")
    parser.add_argument("--max-steps", type=int, default=3, help="Local steps per round (central: 3x).")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--loss-examples", type=int, default=40)
    parser.add_argument("--sources", type=int, default=defaults.sources, help="Passages per training prompt.")
    parser.add_argument("--passage-chars", type=int, default=defaults.passage_chars, help="Training passage length.")
    parser.add_argument(
        "--retrieval-order-share",
        type=float,
        default=defaults.retrieval_order_share,
        help="Share of training prompts whose sources keep the silo's retrieval order (the rest: answer at random).",
    )
    parser.add_argument(
        "--citation-weight",
        type=float,
        default=defaults.citation_weight,
        help="Loss weight of the reply tokens that are the cited source's number.",
    )
    parser.add_argument("--answer-limit", type=int, default=EVAL["answer_limit"], help="Answers evaluated per model.")
    parser.add_argument(
        "--suite",
        choices=("medical", "code"),
        default=EVAL["suite"],
        help="Evaluation suite: medical (unseen ontology silos), or code (Python documentation: another domain, "
        "where retrieval often does not rank the gold passage first).",
    )
    parser.add_argument(
        "--eval-seeds",
        default="0",
        help="Evaluation draws (questions and documents), comma list; with several, the tables pool the paired "
        "differences over every draw's questions. A draw holding a training document is refused.",
    )
    parser.add_argument(
        "--code-silo",
        action="store_true",
        help=f"Federated runs train on a fourth silo, '{CODE_SILO}': Python documentation (none of the code "
        "suite's documents), the code suite's domain. Fixed when the work directory is built.",
    )
    args = parser.parse_args(argv)
    EVAL["suite"] = args.suite
    EVAL["answer_limit"] = args.answer_limit
    EVAL["limit"] = max(EVAL["limit"], args.answer_limit)  # answers are asked of retrieval questions
    bench = Bench(
        work=args.work.resolve(),
        docs_per_silo=args.docs_per_silo,
        rounds=args.rounds,
        max_examples=args.max_examples,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        loss_examples=args.loss_examples,
        sources=args.sources,
        passage_chars=args.passage_chars,
        retrieval_order_share=args.retrieval_order_share,
        citation_weight=args.citation_weight,
        train_silos=(*TRAIN_SILOS, CODE_SILO) if args.code_silo else TRAIN_SILOS,
    )
    built = bench.work / "data.json"
    if built.is_file() and (CODE_SILO in json.loads(built.read_text())["silos"]) != args.code_silo:
        parser.error(f"{bench.work} was built {'with' if not args.code_silo else 'without'} --code-silo: keep it so")
    every = train_configs(bench.train_silos)
    wanted = None if args.only == "all" else {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = (wanted or set()) - {c.name for c in every}
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(sorted(unknown))}: {', '.join(c.name for c in every)}")
    configs = [c for c in every if wanted is None or c.name in wanted]
    evaluated = [n.strip() for n in args.evaluate.split(",") if n.strip()]
    orders = [o.strip() for o in args.source_orders.split(",") if o.strip()]
    try:
        seeds = sorted({int(n) for n in args.eval_seeds.split(",") if n.strip()})
    except ValueError:
        parser.error(f"--eval-seeds takes a comma list of integers, not {args.eval_seeds!r}")
    if not seeds:
        parser.error("--eval-seeds needs at least one seed")
    if set(orders) - set(SOURCE_ORDERS):
        parser.error(f"--source-orders takes {', '.join(SOURCE_ORDERS)}")
    bench.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not (bench.work / "data.json").is_file():
        build_data(bench)
    for config in configs:
        train(bench, config)
    if not args.skip_loss:
        held_out_losses(bench, [c.name for c in configs])
    if not args.skip_eval:
        for seed in seeds:
            EVAL["seed"] = seed
            check_unseen(bench)
            for order in orders:
                for name in ("base", *[n for n in evaluated if wanted is None or n in wanted]):
                    evaluate(bench, name, order, args.eval_cpus)
    tables = report(bench, every, evaluated, seeds)
    tables_file = "tables.md" if EVAL["suite"] == "medical" else f"tables-{EVAL['suite']}.md"
    (bench.work / tables_file).write_text(tables + "\n", encoding="utf-8")
    print(tables)
    log(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
