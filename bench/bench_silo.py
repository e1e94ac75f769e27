"""Silo node overheads, as ratios measured side by side in one run.

1. The node's in-process search (signature-free service call: index + store + policy)
   vs the raw FAISS call on the same vectors, with an index of the kind the node holds (flat
   up to ``--approximate-threshold`` vectors, HNSW with the node's settings above it).
2. A signed HTTP search on loopback (a real ``fedrag silo serve`` process) vs in-process.
3. The node's throughput (searches/s) at 1, 4 and 16 concurrent gateways (one connection each).
4. Ingestion throughput with the real encoder (chunks/s), end to end.

Passages are ``--passage-chars`` long (clinical-style text with numbers, so the release
policy's PII redaction does the work it does on real passages).

    python bench/bench_silo.py --vectors 20000 --queries 300 --ingest-docs 1000
    python bench/bench_silo.py --vectors 100000 --approximate-threshold 200000 --concurrency 1 --ingest-docs 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from federation.client import SiloClient
from federation.config import IndexSettings, SiloSettings, load_silo_settings, write_silo_settings
from federation.encoder import Encoder, SentenceTransformerEncoder
from federation.identity import Identity
from federation.membership import GatewayEntry, Membership, SiloEntry, save_membership
from federation.protocol import Matrix, SearchRequest
from federation.services import free_port
from federation.signing import RequestSigner
from silo_node.demo import running_silo
from silo_node.ingest import make_document
from silo_node.service import SiloService
from silo_node.store import DocumentRecord


def setup(root: Path, encoder: Encoder, index: IndexSettings | None = None) -> tuple[Path, Identity, Membership]:
    gateway, silo = Identity.generate(), Identity.generate()
    gateway.save(root / "keys/gw")
    silo.save(root / "keys/silo")
    membership = Membership(
        name="bench",
        embedding=encoder.spec(),
        silos=(SiloEntry(name="s", url="http://127.0.0.1:1", public_key=silo.public.b64),),
        gateways=(GatewayEntry(name="gw", public_key=gateway.public.b64),),
    )
    save_membership(root / "federation.toml", membership)
    silo_dir = root / "silo"
    silo_dir.mkdir()
    write_silo_settings(
        silo_dir,
        SiloSettings(
            name="s",
            federation_file=Path("../federation.toml"),
            key_file=Path("../keys/silo/private.pem"),
            operator_token_sha256=hashlib.sha256(b"x").hexdigest(),
            index=index or IndexSettings(),
        ),
    )
    return silo_dir, gateway, membership


def passage(i: int, chars: int) -> str:
    """A clinical-style passage of about ``chars`` characters (numbers, doses, dates, but no PII)."""
    sentences = [
        f"Passage {i} of the benchmark corpus, about topic {i % 97}.",
        f"The patient presented with symptom {i % 53} and a blood pressure of {110 + i % 40}/{70 + i % 20} mmHg.",
        f"Treatment started at {250 + 50 * (i % 9)} mg twice daily for {2 + i % 12} weeks.",
        f"Follow-up in 2019 showed marker {i % 31} at {i % 400} units, within the reference range.",
        "No complications were reported and the condition resolved without further intervention.",
    ]
    text = ""
    while len(text) < chars:
        text += " ".join(sentences) + " "
    return text[:chars].strip()


def fill_with_vectors(service: SiloService, n: int, dim: int, seed: int, chars: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = [
        DocumentRecord(
            doc_id=f"d{i}",
            content_hash=str(i),
            title=f"Doc {i}",
            source="bench",
            metadata={},
            chunks=[passage(i, chars)],
            embeddings=vectors[i : i + 1],
        )
        for i in range(n)
    ]
    for start in range(0, n, 2000):
        service.store.upsert_documents(records[start : start + 2000])
    service.save_index()
    return vectors


def raw_index(settings: IndexSettings, vectors: np.ndarray) -> tuple[str, faiss.Index]:
    """A bare FAISS index of the kind a node with ``settings`` holds for ``vectors`` (the baseline)."""
    dim = vectors.shape[1]
    if settings.backend != "faiss":
        raise SystemExit("the raw baseline is built for the faiss backend only")
    if len(vectors) <= settings.approximate_threshold:
        index = faiss.IndexFlatIP(dim)
        kind = "flat"
    elif settings.faiss_approximate == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search
        kind = f"HNSW (M={settings.hnsw_m}, efSearch={settings.hnsw_ef_search})"
    else:
        raise SystemExit("the raw baseline is built for flat and HNSW indexes only")
    index.add(vectors)
    return kind, index


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ingest-docs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passage-chars", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,4,16", help="Concurrent gateways for the throughput run.")
    parser.add_argument(
        "--approximate-threshold",
        type=int,
        default=IndexSettings().approximate_threshold,
        help="The silo's index.approximate_threshold: flat up to this many vectors, HNSW above.",
    )
    args = parser.parse_args()

    encoder = SentenceTransformerEncoder()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        index_settings = IndexSettings(approximate_threshold=args.approximate_threshold)
        silo_dir, gateway, membership = setup(root, encoder, index_settings)
        dim = membership.embedding.dimension
        service = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=encoder).open()
        vectors = fill_with_vectors(service, args.vectors, dim, args.seed, args.passage_chars)
        kind, raw = raw_index(index_settings, vectors)
        node_kind = service.index.kind
        rng = np.random.default_rng(args.seed + 1)
        queries = rng.normal(size=(args.queries, dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        fingerprint = membership.embedding.fingerprint
        requests = [SearchRequest(vector=Matrix.from_numpy(q), k=args.k, fingerprint=fingerprint) for q in queries]

        raw_t, node_t = [], []
        for q, req in zip(queries, requests, strict=True):  # interleaved so both see the same machine state
            t = time.perf_counter()
            raw.search(q[None, :], args.k)
            raw_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            service.search(gateway.key_id, req)
            node_t.append(time.perf_counter() - t)
        service.close()

        with running_silo(silo_dir, free_port()) as url:
            service = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=encoder).open()

            async def http_run() -> tuple[list[float], list[float]]:
                http_t, inproc_t = [], []
                async with SiloClient(url, "s", RequestSigner(gateway), timeout=10) as client:
                    await client.search(queries[0], args.k, fingerprint)  # warm the connection
                    for q, req in zip(queries, requests, strict=True):
                        t = time.perf_counter()
                        await client.search(q, args.k, fingerprint)
                        http_t.append(time.perf_counter() - t)
                        t = time.perf_counter()
                        service.search(gateway.key_id, req)
                        inproc_t.append(time.perf_counter() - t)
                return http_t, inproc_t

            http_t, inproc_t = asyncio.run(http_run())
            service.close()

            async def throughput(clients: int) -> float:
                signer = RequestSigner(gateway)
                async with contextlib.AsyncExitStack() as stack:
                    pool = [
                        await stack.enter_async_context(SiloClient(url, "s", signer, timeout=30))
                        for _ in range(clients)
                    ]
                    await asyncio.gather(*(c.search(queries[0], args.k, fingerprint) for c in pool))  # connect

                    async def one(c: SiloClient, part: np.ndarray) -> None:
                        for q in part:
                            await c.search(q, args.k, fingerprint)

                    started = time.perf_counter()
                    await asyncio.gather(*(one(c, queries[j::clients]) for j, c in enumerate(pool)))
                    return len(queries) / (time.perf_counter() - started)

            rates = {c: asyncio.run(throughput(c)) for c in (int(x) for x in args.concurrency.split(","))}

        print(
            f"## search overheads ({args.vectors} vectors, dim {dim}, k={args.k}, {args.queries} queries, {kind} index "
            f"({node_kind} in the node), {args.passage_chars}-character passages)"
        )
        print("| path | median ms | ratio |")
        print("|---|---|---|")
        print(f"| raw faiss search, {kind} | {median_ms(raw_t):.3f} | 1.00 |")
        print(
            f"| node in-process search (index + store + policy) | {median_ms(node_t):.3f} | "
            f"{median_ms(node_t) / median_ms(raw_t):.2f} x raw |"
        )
        print(f"| node in-process (second pass, beside HTTP) | {median_ms(inproc_t):.3f} | 1.00 |")
        print(
            f"| signed HTTP search on loopback | {median_ms(http_t):.3f} | "
            f"{median_ms(http_t) / median_ms(inproc_t):.2f} x in-process |"
        )

        print()
        print("## throughput: signed HTTP searches per second, concurrent gateways (one connection each)")
        print("| gateways | searches/s | vs 1 |")
        print("|---|---|---|")
        first = next(iter(rates.values()))
        for clients, rate in rates.items():
            print(f"| {clients} | {rate:.0f} | {rate / first:.2f} |")

        if not args.ingest_docs:
            return
        texts = [
            f"Clinical summary {i}. The patient presented with symptom {i % 53} and was treated for condition "
            f"{i % 211}.\n\nFollow-up after {i % 12} weeks showed improvement in marker {i % 31}."
            for i in range(args.ingest_docs)
        ]
        ingest_root = root / "ingest"
        ingest_root.mkdir()
        silo2, _, _ = setup(ingest_root, encoder)
        service = SiloService(load_silo_settings(silo2), silo2, encoder=encoder).open()
        docs = [make_document(f"c{i}", f"Summary {i}", t, {}, source="bench") for i, t in enumerate(texts)]
        report = service.ingest(docs)
        again = service.ingest(docs)
        service.close()
        print()
        print(f"## ingestion ({args.ingest_docs} documents, real encoder, 2 threads)")
        rate = report.chunks / report.seconds
        print(f"- first ingest: {report.chunks} chunks in {report.seconds:.1f} s = {rate:.0f} chunks/s")
        print(f"- re-ingest unchanged: {again.unchanged} skipped in {again.seconds:.2f} s")


if __name__ == "__main__":
    main()
