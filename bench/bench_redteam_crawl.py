"""Red team 1 (issue 12, threat model T2): self-query extraction and crawl coverage, each crawl control off and on.

The attacker holds a gateway key of the federation and searches one silo (a corpus of the
medical suite, ingested by the silo node's own code, real encoder) ``--queries`` times with
``k`` = the policy's ``max_k``. Coverage is the share of the silo's chunks whose text was
released to the key (verbatim, after redaction) after 100 and after ``--queries`` searches.
Attacks, each from a fresh key state:

- ``snowball``: self-query crawl. The first query is a real question; each next query is the
  embedding of a chunk the attacker received and has not queried with yet (it embeds the
  released text with the public encoder), so it walks the index outwards. With nothing left
  to walk it asks a random direction.
- ``snowball-blur``: the same walk, each query blurred with noise to cosine ~0.9 to the chunk,
  below the self-query threshold (an attacker who knows about self-query detection).
- ``sweep``: random unit vectors (spread over the whole space).
- ``questions``: the legitimate baseline, the suite's retrieval questions whose gold document
  the silo holds (each asked once, in order); its refusals are false alarms.

Configurations: controls off; ``[policy.crawl]`` enabled with only ``crawl_limit`` (distinct
cap), only ``self_query``, only ``sweep``; all three (the defaults otherwise). The searches
call :meth:`silo_node.service.SiloService.search` in process (the code the signed
``/v1/search`` route runs, without the signature check); the audit log is off. Best-score
percentiles per attack show where ``sweep_max_score`` and ``self_query_similarity`` sit.

Chunk embeddings come from a :class:`eval.embedding_cache.CachingEncoder` in ``--cache-dir``
(``--seed-cache`` copies an existing cache there first, e.g. one a ``make eval`` run wrote), so
a rerun does not embed the corpus again.

    python bench/bench_redteam_crawl.py --docs-per-corpus 2000 --corpus mondo --queries 1000 \\
        --seed-cache .bench/eval-hybrid-2000/cache/embeddings-aad501698b1a7a90.npz
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from eval.builder import build_federation
from eval.embedding_cache import CachingEncoder
from eval.partition import natural_source
from eval.suites import load_suite
from federation.config import CrawlSettings, load_silo_settings
from federation.encoder import SentenceTransformerEncoder
from federation.errors import BudgetExhausted
from federation.protocol import Matrix, SearchRequest
from silo_node.service import SiloService

CLIENT = "red-team-gateway"
CONFIGS: dict[str, CrawlSettings] = {
    "off": CrawlSettings(enabled=False),
    "crawl_limit only": CrawlSettings(enabled=True, controls=["crawl_limit"]),
    "self_query only": CrawlSettings(enabled=True, controls=["self_query"]),
    "sweep only": CrawlSettings(enabled=True, controls=["sweep"]),
    "all on": CrawlSettings(enabled=True),
}


@dataclass
class Run:
    """One attack against one configuration."""

    released: set[int] = field(default_factory=set)
    coverage_at: dict[int, float] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    best_scores: list[float] = field(default_factory=list)
    queries: int = 0


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


class Attack:
    """Issues one search after another against ``service`` and keeps the score."""

    def __init__(self, service: SiloService, k: int, checkpoints: Sequence[int]) -> None:
        self.service = service
        self.k = k
        self.size = len(service.index)
        self.checkpoints = sorted(checkpoints)
        self.fingerprint = service.membership.embedding.fingerprint
        self.run = Run()

    def search(self, vector: np.ndarray) -> list[tuple[int, str]]:
        """(chunk id, released text) of one search; empty when refused."""
        run = self.run
        run.queries += 1
        best = float(np.max(self.service.index.search(unit(vector), 1)[0]))
        run.best_scores.append(best)
        request = SearchRequest(vector=Matrix.from_numpy(unit(vector)[None, :]), k=self.k, fingerprint=self.fingerprint)
        try:
            hits = self.service.search(CLIENT, request).hits
        except BudgetExhausted as refusal:
            run.refused[refusal.code] = run.refused.get(refusal.code, 0) + 1
            hits = []
        out = [(int(h.chunk_id.rsplit(":", 1)[1]), h.text) for h in hits if h.text is not None]
        run.released.update(i for i, _ in out)
        if run.queries in self.checkpoints:
            run.coverage_at[run.queries] = len(run.released) / self.size
        return [(i, text) for i, text in out if text]


def snowball(
    attack: Attack, embed: Callable[[list[str]], np.ndarray], seed_vector: np.ndarray, queries: int, blur: float
) -> Run:
    """Walk the index with the embeddings of released chunks (blurred by ``blur`` when > 0)."""
    rng = np.random.default_rng(1)
    frontier: list[str] = []
    asked: set[int] = set()
    seen: set[int] = set()
    vector = seed_vector
    for _ in range(queries):
        for chunk_id, text in attack.search(vector):
            if chunk_id not in seen:
                seen.add(chunk_id)
                frontier.append(text)
        while frontier and hash(frontier[0]) in asked:
            frontier.pop(0)
        if frontier:
            text = frontier.pop(0)
            asked.add(hash(text))
            vector = embed([text])[0]
            if blur > 0:
                noise = unit(rng.normal(size=vector.shape[0]))
                vector = unit(unit(vector) + blur * noise)
        else:
            vector = rng.normal(size=seed_vector.shape[0])
    return attack.run


def sweep(attack: Attack, queries: int, dimension: int) -> Run:
    """Random unit vectors."""
    rng = np.random.default_rng(2)
    for _ in range(queries):
        attack.search(rng.normal(size=dimension))
    return attack.run


def questions(attack: Attack, vectors: np.ndarray) -> Run:
    """The legitimate baseline: each real question once."""
    for vector in vectors:
        attack.search(vector)
    return attack.run


def open_service(silo_dir: Path, crawl: CrawlSettings) -> SiloService:
    settings = load_silo_settings(silo_dir)
    settings.policy.crawl = crawl
    return SiloService(settings, silo_dir).open()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs-per-corpus", type=int, default=2000)
    parser.add_argument("--corpus", default="mondo", help="The medical suite's corpus the attacked silo holds.")
    parser.add_argument("--queries", type=int, default=1000, help="Searches per attack (coverage also after 100).")
    parser.add_argument("--questions", type=int, default=1000, help="Most real questions in the baseline.")
    parser.add_argument("--blur", type=float, default=0.5, help="snowball-blur: noise norm added to each query.")
    parser.add_argument("--cache-dir", type=Path, default=Path(".bench/redteam-crawl/cache"))
    parser.add_argument("--seed-cache", type=Path, default=None, help="An embeddings-*.npz to start the cache from.")
    parser.add_argument(
        "--extra-share", type=float, default=0.1, help="Also run all controls with this max_distinct_share (0: no)."
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("silo_node").setLevel(logging.ERROR)  # one 'crawl alert' per refusal otherwise
    configs = dict(CONFIGS)
    if args.extra_share > 0:
        configs[f"all on, share {args.extra_share:g}"] = CrawlSettings(
            enabled=True, max_distinct_share=args.extra_share
        )

    started = time.perf_counter()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    if args.seed_cache is not None and not (args.cache_dir / args.seed_cache.name).exists():
        shutil.copy(args.seed_cache, args.cache_dir / args.seed_cache.name)
    encoder = CachingEncoder(SentenceTransformerEncoder(), args.cache_dir)
    data = load_suite(
        "medical", retrieval_limit=args.questions * 4, mc_limit=0, code_limit=0, docs_per_corpus=args.docs_per_corpus
    )
    documents = [d for d in data.documents if natural_source(d) == args.corpus]
    if not documents:
        raise SystemExit(f"no documents of corpus {args.corpus!r} in the medical suite")
    held = {d.doc_id for d in documents}
    real = [q.question for q in data.retrieval if held & set(q.gold_doc_ids)][: args.questions]
    question_vectors = encoder.encode(real)
    with tempfile.TemporaryDirectory() as tmp:
        federation = build_federation(Path(tmp) / "fed", {args.corpus: documents}, encoder)
        encoder.save()
        silo_dir = federation.silo_dir(args.corpus)
        probe = open_service(silo_dir, CONFIGS["off"])
        size, k, dimension = len(probe.index), probe.settings.policy.max_k, probe.dimension
        probe.close()
        print(
            f"silo {args.corpus}: {len(documents)} documents, {size} chunks; k = max_k = {k}; "
            f"{len(real)} real questions; built in {time.perf_counter() - started:.0f} s"
        )
        checkpoints = [100, args.queries]
        attacks: dict[str, Callable[[Attack], Run]] = {
            "snowball": lambda a: snowball(a, encoder.encode, question_vectors[0], args.queries, 0.0),
            "snowball-blur": lambda a: snowball(a, encoder.encode, question_vectors[0], args.queries, args.blur),
            "sweep": lambda a: sweep(a, args.queries, dimension),
            "questions": lambda a: questions(a, question_vectors),
        }
        results: dict[tuple[str, str], Run] = {}
        for config_name, crawl in configs.items():
            for attack_name, attack_fn in attacks.items():
                service = open_service(silo_dir, crawl)
                try:
                    results[(attack_name, config_name)] = attack_fn(Attack(service, k, checkpoints))
                finally:
                    service.close()
        encoder.save()

    print("\nbest score per search (controls off): p10 / median / p90 / share >= 0.97")
    for attack_name in attacks:
        scores = np.array(results[(attack_name, "off")].best_scores)
        p10, p50, p90 = np.percentile(scores, [10, 50, 90])
        print(f"  {attack_name:14s} {p10:.2f} / {p50:.2f} / {p90:.2f} / {np.mean(scores >= 0.97):.0%}")

    q = args.queries
    print(f"\n| attack | controls | coverage @100 | coverage @{q} | refused (of searches) |")
    print("|---|---|---:|---:|---|")
    for attack_name in attacks:
        for config_name in configs:
            run = results[(attack_name, config_name)]
            at100 = run.coverage_at.get(100, len(run.released) / size)
            final = len(run.released) / size
            refused = ", ".join(f"{code} {n}" for code, n in sorted(run.refused.items())) or "0"
            print(f"| {attack_name} | {config_name} | {at100:.1%} | {final:.1%} | {refused} (of {run.queries}) |")
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s; embedding cache hits {encoder.hits}, misses {encoder.misses}"
    )


if __name__ == "__main__":
    main()
