"""The benchmarks' corpus federation: one silo per packaged corpus, built once and cached.

Each corpus contributes ``--per-corpus`` ingested documents (its silo, real encoder) and
``--questions-per-corpus`` held-out documents whose titles are the questions. The
federation is written under ``--cache-dir`` (default ``.bench/routing-fed``) with a
manifest of the settings and is reused while they stay the same. Used by
``bench/bench_routing.py`` (the routing measurement) and ``bench/bench_gateway.py``
(its questions, and the template silo copied for the fan-out parts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from federation.config import SiloSettings, load_silo_settings, write_silo_settings
from federation.encoder import SentenceTransformerEncoder
from federation.identity import PRIVATE_KEY_FILE, Identity
from federation.membership import GatewayEntry, Membership, SiloEntry, load_membership, save_membership
from silo_node.corpora import CORPORA, load_corpus
from silo_node.service import SiloService

CACHE_VERSION = 1
OPERATOR_SHA = hashlib.sha256(b"bench-operator-token").hexdigest()
DEFAULT_CORPORA = "mondo,hpo,uberon,cl,wiki,pydocs"


def log(message: str) -> None:
    """Progress line on stderr, prefixed with the running script's name and the time."""
    print(f"[{Path(sys.argv[0]).stem} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_silo(silo_dir: Path, name: str, description: str, key_dir: str) -> None:
    """Write ``silo.toml`` for a silo two levels below the federation root."""
    silo_dir.mkdir(parents=True, exist_ok=True)
    write_silo_settings(
        silo_dir,
        SiloSettings(
            name=name,
            description=description,
            federation_file=Path("../../federation.toml"),
            key_file=Path(f"../../keys/{key_dir}/{PRIVATE_KEY_FILE}"),
            operator_token_sha256=OPERATOR_SHA,
        ),
    )


def add_federation_arguments(parser: argparse.ArgumentParser, questions_per_corpus: int = 50) -> None:
    """Add the options that define the corpus federation (its cache key) to ``parser``."""
    parser.add_argument("--corpora", default=DEFAULT_CORPORA, help="one routing silo per corpus (comma list)")
    parser.add_argument("--per-corpus", type=int, default=300, help="documents ingested per routing silo")
    parser.add_argument(
        "--questions-per-corpus", type=int, default=questions_per_corpus, help="held-out documents asked per corpus"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path(".bench/routing-fed"), help="routing federation cache")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the routing federation")
    parser.add_argument("--seed", type=int, default=0)


def corpora_list(text: str) -> list[str]:
    """Parse the ``--corpora`` comma list."""
    return [c.strip() for c in text.split(",") if c.strip()]


@dataclass
class CorpusFederation:
    root: Path
    membership: Membership
    gateway: Identity
    questions: list[tuple[str, str]]  # (corpus the held-out document came from, question text)

    def silo_dir(self, name: str) -> Path:
        return self.root / "silos" / name


def _split(corpus: str, documents: int, per_corpus: int, questions_per_corpus: int, seed: int) -> list[int]:
    """Document indices of one corpus: the first ``per_corpus`` are ingested, the rest asked."""
    count = per_corpus + questions_per_corpus
    if count > documents:
        raise SystemExit(f"corpus {corpus} has {documents} documents, fewer than {count}")
    return random.Random(f"{seed}:{corpus}").sample(range(documents), count)


def corpus_federation(args: argparse.Namespace, encoder: SentenceTransformerEncoder) -> CorpusFederation:
    """Load the cached federation for ``args`` (see :func:`add_federation_arguments`) or build it.

    When only ``--questions-per-corpus`` differs from the cache and every silo would ingest
    the same documents as the cached one (same document ids, recorded in the manifest), the
    silos are kept and only the questions are redone: switching between the benchmarks'
    question counts costs seconds, not a re-embedding.
    """
    root: Path = args.cache_dir
    config = {
        "version": CACHE_VERSION,
        "corpora": args.corpora,
        "per_corpus": args.per_corpus,
        "questions_per_corpus": args.questions_per_corpus,
        "seed": args.seed,
        "fingerprint": encoder.fingerprint,
    }
    manifest = root / "manifest.json"
    if not args.rebuild and manifest.is_file():
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        if saved["config"] == config:
            return _load(root, saved["questions"])
        before = saved["config"].get("questions_per_corpus")
        if {**saved["config"], "questions_per_corpus": args.questions_per_corpus} == config:
            questions = _questions_if_same_silos(args, saved.get("ingested"))
            if questions is not None:
                saved.update(config=config, questions=questions)
                manifest.write_text(json.dumps(saved, indent=1), encoding="utf-8")
                log(f"same silos, new questions: {args.questions_per_corpus} per corpus (was {before})")
                return _load(root, questions)
        log(f"{root} was built with other settings: rebuilding")
    return _build(args, encoder, config)


def _load(root: Path, questions: list[list[str]]) -> CorpusFederation:
    log(f"reusing the corpus federation in {root}")
    return CorpusFederation(
        root=root,
        membership=load_membership(root / "federation.toml"),
        gateway=Identity.load(root / "keys" / "gateway" / PRIVATE_KEY_FILE),
        questions=[(c, q) for c, q in questions],
    )


def _questions_if_same_silos(args: argparse.Namespace, ingested: object) -> list[list[str]] | None:
    if not isinstance(ingested, dict):
        return None  # a manifest from before the ingested ids were recorded
    questions: list[list[str]] = []
    for corpus in args.corpora:
        documents = load_corpus(corpus)
        picked = _split(corpus, len(documents), args.per_corpus, args.questions_per_corpus, args.seed)
        if sorted(documents[i].doc_id for i in picked[: args.per_corpus]) != ingested.get(corpus):
            return None
        questions += [[corpus, documents[i].title] for i in picked[args.per_corpus :] if documents[i].title.strip()]
    return questions


def _build(
    args: argparse.Namespace, encoder: SentenceTransformerEncoder, config: dict[str, object]
) -> CorpusFederation:
    root: Path = args.cache_dir
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    ids = {name: Identity.generate() for name in ("gateway", *args.corpora)}
    for name, identity in ids.items():
        identity.save(root / "keys" / name)
    membership = Membership(
        name="bench-routing",
        embedding=encoder.spec(),
        silos=tuple(
            SiloEntry(
                name=c, url="http://127.0.0.1:1", public_key=ids[c].public.b64, description=CORPORA[c].description
            )
            for c in args.corpora
        ),
        gateways=(GatewayEntry(name="gw", public_key=ids["gateway"].public.b64),),
    )
    save_membership(root / "federation.toml", membership)
    questions: list[tuple[str, str]] = []
    ingested: dict[str, list[str]] = {}
    started = time.perf_counter()
    for corpus in args.corpora:
        t = time.perf_counter()
        documents = load_corpus(corpus)
        picked = _split(corpus, len(documents), args.per_corpus, args.questions_per_corpus, args.seed)
        ingest = [documents[i] for i in sorted(picked[: args.per_corpus])]
        held_out = [documents[i] for i in picked[args.per_corpus :]]
        ingested[corpus] = sorted(d.doc_id for d in ingest)
        silo_dir = root / "silos" / corpus
        write_silo(silo_dir, corpus, CORPORA[corpus].description, corpus)
        service = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=encoder).open()
        try:
            report = service.ingest(ingest)
        finally:
            service.close()
        questions += [(corpus, d.title) for d in held_out if d.title.strip()]
        log(
            f"silo {corpus}: {report.documents} documents, {report.chunks} chunks, "
            f"{time.perf_counter() - t:.0f} s (load + embed)"
        )
    manifest = root / "manifest.json"
    payload = {"config": config, "questions": questions, "ingested": ingested}
    manifest.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    log(f"corpus federation built in {time.perf_counter() - started:.0f} s")
    return CorpusFederation(root, membership, ids["gateway"], questions)
