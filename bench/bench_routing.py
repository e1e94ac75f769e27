"""Routing benchmark (issue 3): fraction of silo calls vs recall@k against asking all silos.

The federation (``bench/routing_federation.py``) has one silo per packaged corpus (real
encoder); the questions are titles of held-out documents of each corpus. Each silo is
searched once per question, in process, and the replies are merged by score: the silos
holding passages of the all-silo top-k are the question's label, and the fraction of the
top-k each holds is its share. Routers are then replayed on the silos' cards offline, and
for each one the selected silos' replies are merged again: recall@k of that result against
the all-silo top-k, and the fraction of silo calls, on the test questions.

Alternate questions of each corpus are for training and for testing. The learned routers
are trained on the training half only; every setting marked "calibrated" is chosen there
too, by ``router.calibrate`` (5-fold cross-validation inside the training half: the
cheapest setting whose out-of-fold recall reaches ``--target-recall``). The test half is
used only to report.

The federation is cached under ``--cache-dir`` (default ``.bench/routing-fed``) and
reused; a different ``--questions-per-corpus`` keeps its silos. Example (the figures in
bench/RESULTS.md):

    .venv/bin/python bench/bench_routing.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from routing_federation import CorpusFederation, add_federation_arguments, corpora_list, corpus_federation, log

from aggregation import Passage, ScoreMerger, validate_reply
from federation.config import load_silo_settings
from federation.encoder import SentenceTransformerEncoder
from federation.protocol import Matrix, SearchRequest
from router import (
    AllRouter,
    Calibration,
    CentroidRouter,
    LearnedRouter,
    Router,
    SiloView,
    TrainingExample,
    calibrate,
)
from silo_node.service import SiloService


@dataclass
class Replay:
    """Every silo's reply to every question, and what asking all silos gives."""

    names: list[str]
    chunks: dict[str, int]
    views: tuple[SiloView, ...]
    vectors: np.ndarray
    results: list[dict[str, list[Passage]]]  # per question: silo -> its validated passages
    full: list[set[tuple[str, str]]]  # per question: the keys of the all-silo top-k
    examples: list[TrainingExample]  # per question: label silos and their shares


def replay(fed: CorpusFederation, encoder: SentenceTransformerEncoder, k: int) -> Replay:
    """Search every silo in process with every question; label each question."""
    names = [s.name for s in fed.membership.silos]
    services = {}
    for name in names:
        settings = load_silo_settings(fed.silo_dir(name))
        settings.policy.audit_log = False  # offline replay: keep the cached silos' audit logs clean
        services[name] = SiloService(settings, fed.silo_dir(name)).open()
    try:
        cards = {n: s.card() for n, s in services.items()}
        described = encoder.encode([cards[n].description or n for n in names])  # as Pipeline._views does
        views = tuple(
            SiloView(name=n, card=cards[n], description_vector=v) for n, v in zip(names, described, strict=True)
        )
        vectors = encoder.encode([q for _, q in fed.questions])
        fingerprint = fed.membership.embedding.fingerprint
        results: list[dict[str, list[Passage]]] = []
        for vector in vectors:
            request = SearchRequest(vector=Matrix.from_numpy(vector), k=k, fingerprint=fingerprint)
            results.append(
                {
                    n: validate_reply(n, s.search(fed.gateway.key_id, request), k_requested=k)
                    for n, s in services.items()
                }
            )
    finally:
        for service in services.values():
            service.close()
    merger = ScoreMerger()
    full, examples = [], []
    for vector, per in zip(vectors, results, strict=True):
        merged = merger.merge(per, k)
        full.append({p.key for p in merged})
        counts = Counter(p.silo for p in merged)
        shares = {silo: n / len(merged) for silo, n in counts.items()}
        examples.append(TrainingExample(query=vector, silos=views, relevant=frozenset(counts), shares=shares))
    chunks = {n: cards[n].chunk_count for n in names}
    return Replay(names, chunks, views, vectors, results, full, examples)


def split(fed: CorpusFederation) -> tuple[list[int], list[int]]:
    """Alternate questions of each corpus go to training and to testing."""
    seen: Counter[str] = Counter()
    train: list[int] = []
    test: list[int] = []
    for i, (corpus, _) in enumerate(fed.questions):
        (train if seen[corpus] % 2 == 0 else test).append(i)
        seen[corpus] += 1
    return train, test


@dataclass
class Row:
    selected: list[list[str]]  # per test question
    note: str = ""


def score(data: Replay, test: list[int], row: Row, subset: Sequence[int], k: int) -> tuple[float, float, float, float]:
    """Fraction of silo calls, recall@k (merging the selected silos' replies), label silos found, share < 0.8."""
    merger = ScoreMerger()
    fractions, recalls, found = [], [], []
    for j in subset:
        i, selected = test[j], row.selected[j]
        fractions.append(len(selected) / len(data.names))
        got = {p.key for p in merger.merge({s: data.results[i][s] for s in selected}, k)}
        recalls.append(len(got & data.full[i]) / len(data.full[i]))
        relevant = data.examples[i].relevant
        found.append(len(set(selected) & relevant) / len(relevant))
    low = sum(r < 0.8 for r in recalls) / len(recalls)
    return statistics.mean(fractions), statistics.mean(recalls), statistics.mean(found), low


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_federation_arguments(parser, questions_per_corpus=200)
    parser.add_argument("--k", type=int, default=10, help="recall@k: size of the merged top-k")
    parser.add_argument("--target-recall", type=float, default=0.95, help="what the calibrated settings aim at")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds inside the training half")
    args = parser.parse_args()
    args.corpora = corpora_list(args.corpora)

    started = time.perf_counter()
    encoder = SentenceTransformerEncoder()
    encoder.encode(["warm up"])
    fed = corpus_federation(args, encoder)
    log(f"searching {len(fed.questions)} questions in every silo")
    data = replay(fed, encoder, args.k)
    train, test = split(fed)
    if not all(data.full[i] for i in range(len(fed.questions))):
        raise SystemExit("a question found nothing in any silo")
    training = [data.examples[i] for i in train]
    target = args.target_recall

    def routed(router: Router, max_silos: int | None = None) -> list[list[str]]:
        return [router.route(data.vectors[i], data.views, max_silos=max_silos).selected for i in test]

    rows: dict[str, Row] = {
        "all": Row(routed(AllRouter())),
        "oracle (exactly the label silos)": Row([sorted(data.examples[i].relevant) for i in test]),
        "centroid (threshold 0.3, top_m 3, max_silos 2)": Row(routed(CentroidRouter(), 2)),
        "centroid (threshold 0.3, top_m 3, no budget)": Row(routed(CentroidRouter())),
        "centroid (always the top 3: threshold -1, top_m 3)": Row(routed(CentroidRouter(threshold=-1.0))),
    }
    log(f"training and calibrating the learned routers on {len(train)} questions")
    t = time.perf_counter()
    relevance = LearnedRouter.train(training, model="relevance")
    share = LearnedRouter.train(training, model="share")
    fit_s = time.perf_counter() - t
    rows["learned relevance, p >= 0.5 (the old default)"] = Row(routed(relevance))
    rows["learned relevance, p >= 0.3"] = Row(routed(relevance.with_threshold(0.3)))
    margin = min(1.0, round(target + 0.01, 4))  # what a safety margin on the target costs

    def timed(run: Callable[[], Calibration]) -> tuple[Calibration, float]:
        t = time.perf_counter()
        return run(), time.perf_counter() - t

    folds = args.folds
    calibrations: dict[str, tuple[Calibration, float]] = {
        "relevance, threshold": timed(
            lambda: calibrate(training, target_recall=target, model="relevance", selection="threshold", folds=folds)
        ),
        "share, threshold": timed(
            lambda: calibrate(training, target_recall=target, model="share", selection="threshold", folds=folds)
        ),
        "share, coverage": timed(lambda: calibrate(training, target_recall=target, folds=folds)),
        f"share, coverage (target {margin:g})": timed(lambda: calibrate(training, target_recall=margin, folds=folds)),
    }
    found = calibrations["relevance, threshold"][0]
    rows[f"learned relevance, p >= {found.value:g} (calibrated)"] = Row(routed(relevance.with_threshold(found.value)))
    rows[f"learned share, coverage {share.coverage:g} (the default, not calibrated)"] = Row(routed(share))
    found = calibrations["share, threshold"][0]
    rows[f"learned share, share >= {found.value:g} (calibrated)"] = Row(routed(share.with_threshold(found.value)))
    found = calibrations["share, coverage"][0]
    covered = share.with_coverage(found.value)
    best = f"**learned share, coverage {found.value:g} (calibrated)**"
    rows[best] = Row(routed(covered))
    rows[f"learned share, coverage {found.value:g} (calibrated), max_silos 2"] = Row(routed(covered, 2))
    found = calibrations[f"share, coverage (target {margin:g})"][0]
    rows[f"learned share, coverage {found.value:g} (calibrated for recall {margin:g})"] = Row(
        routed(share.with_coverage(found.value))
    )

    k = args.k
    everything = list(range(len(test)))
    per_question = statistics.mean(len(data.examples[i].relevant) for i in test)
    print(f"# Routing benchmark ({time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f} at start)\n")
    print(
        f"{len(data.names)} silos, one per corpus: {', '.join(data.names)} "
        f"(chunks: {', '.join(f'{n} {c}' for n, c in data.chunks.items())}); {len(fed.questions)} questions "
        f"({args.questions_per_corpus} per corpus), {len(train)} to train and calibrate, {len(test)} to test; "
        f"recall@{k} of the score-merged top-{k} against asking all silos. Silos contributing to the "
        f"all-silo top-{k} (the label): {per_question:.2f} per test question on average.\n"
    )
    print(
        f"| router | silo calls (fraction of all) | recall@{k} vs all silos | label silos found "
        f"| test questions with recall@{k} < 0.8 |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        fraction, recall, found_labels, low = score(data, test, row, everything, k)
        print(f"| {name} | {fraction:.3f} | {recall:.3f} | {found_labels:.3f} | {low:.3f} |")
    print()
    print(
        f"Calibration on the training half ({args.folds}-fold cross-validation, target recall@{k} {target:g}; "
        f"fitting both models once took {fit_s:.2f} s):\n"
    )
    print("| model, selection | chosen setting | out-of-fold recall@k | out-of-fold calls | time s |")
    print("|---|---:|---:|---:|---:|")
    for name, (found, seconds) in calibrations.items():
        print(f"| {name} | {found.value:g} | {found.recall:.3f} | {found.fraction_asked:.3f} | {seconds:.1f} |")
    print()
    pick = ["centroid (threshold 0.3, top_m 3, max_silos 2)", "learned relevance, p >= 0.5 (the old default)", best]
    print(f"By the corpus the question came from (calls fraction / recall@{k}):\n")
    print("| corpus | test questions | label silos | " + " | ".join(n.strip("*") for n in pick) + " |")
    print("|---|---:|---:|" + "---:|" * len(pick))
    for corpus in data.names:
        subset = [j for j, i in enumerate(test) if fed.questions[i][0] == corpus]
        if subset:
            cells = []
            for name in pick:
                fraction, recall, _, _ = score(data, test, rows[name], subset, k)
                cells.append(f"{fraction:.2f} / {recall:.3f}")
            labels = statistics.mean(len(data.examples[test[j]].relevant) for j in subset)
            print(f"| {corpus} | {len(subset)} | {labels:.2f} | " + " | ".join(cells) + " |")
    print()
    print(f"whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
