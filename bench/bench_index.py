"""Benchmark the silo node's vector index backends on one set of vectors.

Builds every backend (exact, faiss-flat, faiss-hnsw, faiss-ivf, hnswlib) on the same
vectors, then prints markdown tables: build time, batch and single-query throughput,
recall@k against exact search, serialised bytes per vector, and the recall / throughput
curve over each approximate index's search parameter (efSearch, nprobe).

    .venv/bin/python bench/bench_index.py --n 100000 --dim 384 --queries 1000 --seed 0
    .venv/bin/python bench/bench_index.py --vectors embeddings.npy --queries 1000

Default data: seeded synthetic unit vectors from a Gaussian mixture on the sphere
(cluster centres uniform on the sphere, isotropic noise of norm ~``--spread``); queries
are fresh draws from the same mixture. With ``--vectors`` the rows of the file are
L2-normalised and ``--queries`` of them are held out as queries, never indexed: a seeded random
sample (``--holdout random``, the default, so that a file in some order, e.g. ontology terms by
id, gives queries like the corpus) or the last rows (``--holdout last``, for a file that is the
corpus followed by its own queries).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from federation.config import IndexSettings
from silo_node.index import ExactIndex, FaissIndex, HnswlibIndex, VectorIndex, make_index

BACKENDS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf", "hnswlib")
EF_CURVE = (16, 32, 64, 128, 256)
NPROBE_CURVE = (1, 2, 4, 8, 16, 32, 64, 128)


def clustered_unit_vectors(n: int, dim: int, *, clusters: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        block = centres[rng.integers(0, clusters, m)]
        block += (spread / np.sqrt(dim)) * rng.standard_normal((m, dim)).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    if args.vectors:
        data = np.load(args.vectors).astype(np.float32)
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        if args.queries >= data.shape[0]:
            raise SystemExit(f"--queries {args.queries} leaves no vectors to index in {data.shape[0]} rows")
        if args.holdout == "random":
            data = data[np.random.default_rng(args.seed).permutation(data.shape[0])]
        if args.n and args.n + args.queries <= data.shape[0]:
            data = data[-(args.n + args.queries) :]
        vectors, queries = data[: -args.queries], data[-args.queries :]
        held = "a seeded random sample" if args.holdout == "random" else "the last rows"
        desc = f"file {args.vectors}, queries: {held} of the file, held out of the index"
        return np.ascontiguousarray(vectors), np.ascontiguousarray(queries), desc
    points = clustered_unit_vectors(
        args.n + args.queries, args.dim, clusters=args.clusters, spread=args.spread, seed=args.seed
    )
    desc = f"synthetic Gaussian mixture on the sphere: {args.clusters} clusters, spread {args.spread}, seed {args.seed}"
    return points[: args.n], points[args.n :], desc


@dataclass
class Row:
    name: str
    kind: str
    build_s: float
    batch_qps: float
    single_qps: float
    recall: float
    bytes_per_vector: float


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist()) - {-1}) for f, t in zip(found, truth, strict=True))
    return hits / int((truth >= 0).sum())


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(index: VectorIndex, queries: np.ndarray, singles: int, k: int) -> tuple[float, float, np.ndarray]:
    index.search(queries[:8], k)  # warm-up
    found: list[np.ndarray] = []
    batch_s = timed(lambda: found.append(index.search(queries, k)[1]))
    single_s = timed(lambda: [index.search(queries[i : i + 1], k) for i in range(singles)])
    return len(queries) / batch_s, singles / single_s, found[0]


def build(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray, batch: int) -> float:
    def run() -> None:
        for start in range(0, len(ids), batch):
            index.add(ids[start : start + batch], vectors[start : start + batch])

    return timed(run)


def fmt_qps(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def make_settings(name: str, n: int) -> IndexSettings:
    base = IndexSettings(use_gpu=False)
    # Approximate FAISS rows must cross the threshold even for small --n.
    crossing = min(base.approximate_threshold, max(1, n // 5))
    return {
        "exact": base.model_copy(update={"backend": "exact"}),
        "faiss-flat": base.model_copy(update={"approximate_threshold": n + 1}),
        "faiss-hnsw": base.model_copy(update={"faiss_approximate": "hnsw", "approximate_threshold": crossing}),
        "faiss-ivf": base.model_copy(update={"faiss_approximate": "ivf", "approximate_threshold": crossing}),
        "hnswlib": base.model_copy(update={"backend": "hnswlib"}),
    }[name]


def run_backend(name: str, data_dir: Path, batch: int, singles: int, k: int) -> dict[str, Any]:
    """Build and measure one backend (in its own process, see ``main``)."""
    vectors = np.load(data_dir / "vectors.npy")
    queries = np.load(data_dir / "queries.npy")
    truth = np.load(data_dir / "truth.npy")
    n, dim = vectors.shape
    ids = np.arange(n, dtype=np.int64)
    index = make_index(make_settings(name, n), dim)
    build_s = build(index, ids, vectors, batch)
    batch_qps, single_qps, found = measure(index, queries, singles, k)
    row = Row(name, index.kind, build_s, batch_qps, single_qps, recall_at(found, truth), len(index.to_bytes()) / n)
    curve: list[tuple[int, float, float, float]] = []
    if isinstance(index, FaissIndex | HnswlibIndex) and index.kind != "faiss-flat":
        ivf = index.kind == "faiss-ivf"
        for value in NPROBE_CURVE if ivf else EF_CURVE:
            if isinstance(index, FaissIndex) and ivf:
                index.tune(nprobe=value)
            else:
                index.tune(ef_search=value)
            bq, sq, f = measure(index, queries, singles, k)
            curve.append((value, recall_at(f, truth), bq, sq))
    return {"row": asdict(row), "curve": curve}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="vectors to index")
    parser.add_argument("--dim", type=int, default=384, help="dimension of synthetic vectors")
    parser.add_argument("--queries", type=int, default=1000, help="queries (batch search and recall)")
    parser.add_argument("--single-queries", type=int, default=200, help="queries sent one at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=100, help="synthetic mixture components")
    parser.add_argument("--spread", type=float, default=1.0, help="synthetic noise norm relative to the centre")
    parser.add_argument("--vectors", type=Path, help=".npy file of real embeddings (n, d) instead of synthetic data")
    parser.add_argument(
        "--holdout",
        choices=("random", "last"),
        default="random",
        help="with --vectors: which rows become queries (seeded random sample, or the last rows)",
    )
    parser.add_argument("--batch", type=int, default=10_000, help="vectors per add() call, as ingestion does")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated subset of " + ",".join(BACKENDS)
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="OMP/BLAS threads per backend process (0: library default, all CPUs)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one backend
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_backend(args.worker, args.data_dir, args.batch, args.single_queries, args.k)))
        return 0

    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(wanted) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    vectors, queries, desc = load_data(args)
    n, dim = vectors.shape
    k = args.k
    base = IndexSettings(use_gpu=False)
    print(f"- data: {n:,} vectors x {dim} ({desc}); {len(queries):,} queries, k={k}")
    threads = args.threads or os.cpu_count()
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, no GPU; {threads} OMP/BLAS threads per backend; "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print(f"- faiss {faiss.__version__}, hnswlib 0.8.0, numpy {np.__version__}, Python {sys.version.split()[0]}")
    print(
        f"- settings: HNSW M={base.hnsw_m} efC={base.hnsw_ef_construction} efSearch={base.hnsw_ef_search}; "
        f"IVF nlist=4*sqrt(n at the crossing) nprobe={base.ivf_nprobe}; faiss-hnsw/ivf cross the flat threshold at "
        f"{make_settings('faiss-ivf', n).approximate_threshold:,}; vectors added in batches of {args.batch:,}"
    )
    print(
        f"- batch QPS: all {len(queries):,} queries in one search call; single QPS: {args.single_queries} calls of "
        "one query; each backend measured in a fresh process\n",
        flush=True,
    )

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        data_dir = Path(tmp)
        truth_index = ExactIndex(dim)
        truth_index.add(np.arange(n, dtype=np.int64), vectors)
        np.save(data_dir / "truth.npy", truth_index.search(queries, k)[1])
        del truth_index
        np.save(data_dir / "vectors.npy", vectors)
        np.save(data_dir / "queries.npy", queries)
        for name in wanted:
            cmd = [sys.executable, __file__, "--worker", name, "--data-dir", str(data_dir)]
            cmd += ["--batch", str(args.batch), "--single-queries", str(args.single_queries), "--k", str(k)]
            env = dict(os.environ)
            if args.threads > 0:
                for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                    env[var] = str(args.threads)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(f"<!-- {name}: built in {results[-1]['row']['build_s']:.1f}s -->", file=sys.stderr, flush=True)

    rows = [Row(**r["row"]) for r in results]
    exact = next((r for r in rows if r.name == "exact"), rows[0])
    print(f"| backend | kind | build (s) | batch QPS | × exact | single QPS | × exact | recall@{k} | bytes/vector |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.name} | {r.kind} | {r.build_s:.1f} | {fmt_qps(r.batch_qps)} | {r.batch_qps / exact.batch_qps:.1f} | "
            f"{fmt_qps(r.single_qps)} | {r.single_qps / exact.single_qps:.1f} | {r.recall:.3f} | "
            f"{r.bytes_per_vector:,.0f} |"
        )
    for r, result in zip(rows, results, strict=True):
        if not result["curve"]:
            continue
        param = "nprobe" if r.kind == "faiss-ivf" else "efSearch"
        print(f"\n{r.name} ({r.kind}): recall@{k} and QPS over {param}\n")
        print(f"| {param} | recall@{k} | batch QPS | × exact | single QPS | × exact |")
        print("|---:|---:|---:|---:|---:|---:|")
        for value, rec, bq, sq in result["curve"]:
            print(
                f"| {value} | {rec:.3f} | {fmt_qps(bq)} | {bq / exact.batch_qps:.1f} | "
                f"{fmt_qps(sq)} | {sq / exact.single_qps:.1f} |"
            )
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
