"""Embedding backends side by side on real corpora: chunks/s, and how faithful each is to torch.

Chunks ~1,000-character passages (the silo's chunker, default settings) of real corpora,
embeds them with every backend in one process, alternating batch by batch so each backend sees
the same machine state, and reports chunks/s and its ratio to torch (sentence-transformers,
float32), the smallest cosine between a backend's vector and torch's for the same chunk, and
overlap@10: for queries drawn from the same corpora (other chunks' first sentences), the share of
torch's top-10 chunks that the backend's top-10 also holds. With ``--ingest-docs N``, it then
ingests N documents of the same corpora into a fresh silo per backend (``SiloService.ingest``, what
``fedrag silo ingest`` runs: read, chunk, embed, durable commit, index), twice per backend in the
order A B C, C B A, and reports end-to-end chunks/s.

    .venv/bin/python bench/bench_encoder.py --corpora python-docs,wiki --chunks 600 --queries 200 --ingest-docs 300
"""

from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from federation.config import ChunkingSettings
from federation.encoder import ENCODER_BACKENDS, Encoder, make_encoder
from silo_node.corpora import load_corpus
from silo_node.ingest.chunking import chunk_text
from silo_node.ingest.readers import SourceDocument


def corpus_chunks(names: list[str], limit: int, seed: int) -> list[str]:
    """About ``limit`` chunks of ~1,000 characters, spread over the corpora, the longest ones kept."""
    settings = ChunkingSettings()
    chunks: list[str] = []
    for name in names:
        for document in load_corpus(name, limit=limit * 2, seed=seed):
            chunks += chunk_text(document.text, max_chars=settings.max_chars, overlap_chars=settings.overlap_chars)
    long_ones = [c for c in chunks if len(c) >= 600] or chunks
    random.Random(seed).shuffle(long_ones)
    return long_ones[:limit]


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.?!])\s", text.strip(), maxsplit=1)[0][:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default="python-docs,wiki", help="Corpora (silo_node/corpora.py), comma list.")
    parser.add_argument("--chunks", type=int, default=600)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backends", default=",".join(ENCODER_BACKENDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ingest-docs", type=int, default=0, help="Documents ingested per backend (0: skip).")
    args = parser.parse_args()

    chunks = corpus_chunks(args.corpora.split(","), args.chunks, args.seed)
    queries = [first_sentence(c) for c in random.Random(args.seed + 1).sample(chunks, min(args.queries, len(chunks)))]
    backends: dict[str, Encoder] = {name: make_encoder(name) for name in args.backends.split(",")}
    for encoder in backends.values():
        encoder.encode(chunks[:4])  # load, convert, warm up
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in backends}
    seconds = dict.fromkeys(backends, 0.0)
    for start in range(0, len(chunks), args.batch_size):
        batch = chunks[start : start + args.batch_size]
        for name, encoder in backends.items():  # interleaved: each backend embeds the same batch in turn
            t = time.perf_counter()
            vectors[name].append(encoder.encode(batch, batch_size=args.batch_size))
            seconds[name] += time.perf_counter() - t
    embedded = {name: np.vstack(parts) for name, parts in vectors.items()}
    reference = "torch" if "torch" in backends else next(iter(backends))
    top = {}
    for name, encoder in backends.items():
        q = encoder.encode(queries)
        top[name] = np.argsort(-(q @ embedded[name].T), axis=1)[:, :10]
    mean_chars = sum(len(c) for c in chunks) / len(chunks)
    print(
        f"## embedding backends ({len(chunks)} chunks of {mean_chars:.0f} characters on average from {args.corpora}; "
        f"{len(queries)} queries; batches of {args.batch_size}; {os.cpu_count()} cores)"
    )
    print(f"| backend | chunks/s | vs {reference} | min cosine to {reference} | overlap@10 with {reference} |")
    print("|---|---|---|---|---|")
    for name in backends:
        rate = len(chunks) / seconds[name]
        cosine = float((embedded[name] * embedded[reference]).sum(axis=1).min())
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top[name], top[reference], strict=True)])
        print(f"| {name} | {rate:.1f} | {seconds[reference] / seconds[name]:.2f}x | {cosine:.5f} | {overlap:.3f} |")
    if args.ingest_docs > 0:
        names = args.corpora.split(",")
        per = -(-args.ingest_docs // len(names))
        documents = [d for name in names for d in load_corpus(name, limit=per, seed=args.seed + 2)][: args.ingest_docs]
        rates = ingest_rates(backends, documents)
        print()
        print(f"## end-to-end ingestion ({len(documents)} documents of {args.corpora}, a fresh silo per run, twice)")
        print(f"| backend | chunks/s | vs {reference} |")
        print("|---|---|---|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:.1f} | {rate / rates[reference]:.2f}x |")


def ingest_rates(backends: dict[str, Encoder], documents: list[SourceDocument]) -> dict[str, float]:
    """End-to-end ingestion chunks/s per backend: a fresh silo each time, backends in order A B C, C B A."""
    from bench_silo import setup  # the same bench silo (membership, keys, settings) as bench_silo.py

    from federation.config import load_silo_settings
    from silo_node.service import SiloService

    chunks = dict.fromkeys(backends, 0)
    seconds = dict.fromkeys(backends, 0.0)
    order = [*backends, *reversed(backends)]
    with tempfile.TemporaryDirectory(prefix="bench-encoder-") as tmp:
        for run, name in enumerate(order):
            root = Path(tmp) / f"{run}-{name}"
            root.mkdir()
            silo_dir, _, _ = setup(root, backends[name])
            service = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=backends[name]).open()
            try:
                report = service.ingest(documents)
            finally:
                service.close()
            chunks[name] += report.chunks
            seconds[name] += report.seconds
    return {name: chunks[name] / seconds[name] for name in backends}


if __name__ == "__main__":
    main()
