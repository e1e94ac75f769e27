"""Build evaluation federations with the silo node's own ingestion, and serve them.

A federation here is a directory: keys, ``federation.toml`` and one silo directory per
part of a partition (``silos/<name>``), ingested by :class:`silo_node.service.SiloService`
exactly as ``fedrag silo ingest`` does. A manifest records what each silo holds; a later
run (or a resumed one) reuses the directory while the documents and the encoder are the
same, and rebuilds it otherwise.

Silos are served either in process, each through the silo app factory behind an
``httpx.ASGITransport`` (fast; the signed protocol, validation and release policy are the
same code), or as real ``fedrag silo serve`` processes on loopback. Release-policy
variants (differential privacy at several epsilons) are applied at serving time as
settings overrides, so one built federation serves every configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from federation.config import NoisySelectionSettings, SiloSettings, load_silo_settings, write_silo_settings
from federation.encoder import Encoder
from federation.identity import PRIVATE_KEY_FILE, Identity
from federation.membership import EmbeddingSpec, GatewayEntry, Membership, SiloEntry, load_membership, save_membership
from federation.protocol import SearchMode
from federation.services import free_port
from silo_node.ingest.readers import SourceDocument
from silo_node.service import SiloService

__all__ = ["BuiltFederation", "ServeMode", "build_federation", "serve_silos"]

logger = logging.getLogger(__name__)

ServeMode = Literal["inprocess", "process"]
_MANIFEST = "manifest.json"
_MANIFEST_VERSION = 1
GATEWAY = "eval-gateway"


@dataclass(frozen=True)
class BuiltFederation:
    """A built federation on disk.

    Attributes:
        root: its directory.
        silo_docs: silo name -> ids of the documents it holds (where gold passages live).
    """

    root: Path
    silo_docs: Mapping[str, frozenset[str]]

    @property
    def federation_file(self) -> Path:
        """The membership file."""
        return self.root / "federation.toml"

    @property
    def gateway_key_file(self) -> Path:
        """The gateway's private key."""
        return self.root / "keys" / GATEWAY / PRIVATE_KEY_FILE

    def silo_dir(self, name: str) -> Path:
        """Directory of silo ``name``."""
        return self.root / "silos" / name

    def membership(self) -> Membership:
        """The federation's membership file, read."""
        return load_membership(self.federation_file)

    def silos_holding(self, doc_ids: Sequence[str] | frozenset[str]) -> frozenset[str]:
        """Silos that hold at least one of ``doc_ids``."""
        wanted = set(doc_ids)
        return frozenset(name for name, held in self.silo_docs.items() if held & wanted)


def _digest(documents: Sequence[SourceDocument]) -> str:
    hasher = hashlib.sha256()
    for document in sorted(documents, key=lambda d: d.doc_id):
        hasher.update(f"{document.doc_id}\0{document.content_hash}\n".encode())
    return hasher.hexdigest()


def build_federation(
    root: Path,
    parts: Mapping[str, Sequence[SourceDocument]],
    encoder: Encoder,
    *,
    descriptions: Mapping[str, str] | None = None,
    index_backend: Literal["faiss", "hnswlib", "exact"] = "faiss",
    on_silo: Callable[[str, int], None] | None = None,
) -> BuiltFederation:
    """Build (or reuse) a federation with one silo per entry of ``parts``.

    Args:
        root: the federation's directory (created; replaced if it holds something else).
        parts: silo name -> the documents it ingests.
        encoder: embeds the chunks (a caching encoder shares work between federations).
        descriptions: silo name -> the description on its card (default: the name).
        index_backend: the silos' vector index (``exact`` for the central upper bound).
        on_silo: called with (silo name, document count) before each silo is ingested.
    """
    descriptions = descriptions or {}
    config = {
        "version": _MANIFEST_VERSION,
        "fingerprint": encoder.fingerprint,
        "index_backend": index_backend,
        "silos": {name: _digest(docs) for name, docs in sorted(parts.items())},
        "descriptions": {name: descriptions.get(name, name) for name in sorted(parts)},
    }
    silo_docs = {name: frozenset(d.doc_id for d in docs) for name, docs in parts.items()}
    manifest = root / _MANIFEST
    if manifest.is_file():
        try:
            saved = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if saved == config:
            logger.info("reusing the federation in %s", root)
            return BuiltFederation(root, silo_docs)
    if root.exists():
        shutil.rmtree(root)
    (root / "silos").mkdir(parents=True)
    identities = {name: Identity.generate() for name in (GATEWAY, *parts)}
    for name, identity in identities.items():
        identity.save(root / "keys" / name)
    membership = Membership(
        name=root.name,
        embedding=EmbeddingSpec(
            model=encoder.model_id,
            dimension=encoder.dimension,
            fingerprint=encoder.fingerprint,
            backend=getattr(encoder, "backend", "torch"),
        ),
        silos=tuple(
            SiloEntry(
                name=name,
                url="http://127.0.0.1:1",  # replaced when served as processes
                public_key=identities[name].public.b64,
                description=descriptions.get(name, name),
            )
            for name in sorted(parts)
        ),
        gateways=(GatewayEntry(name=GATEWAY, public_key=identities[GATEWAY].public.b64),),
    )
    save_membership(root / "federation.toml", membership)
    operator_sha = hashlib.sha256(secrets.token_bytes(32)).hexdigest()  # nobody operates these silos
    for name in sorted(parts):
        silo_dir = root / "silos" / name
        silo_dir.mkdir()
        settings = SiloSettings(
            name=name,
            description=descriptions.get(name, name),
            federation_file=Path("../../federation.toml"),
            key_file=Path(f"../../keys/{name}/{PRIVATE_KEY_FILE}"),
            operator_token_sha256=operator_sha,
        )
        settings.index.backend = index_backend
        settings.policy.audit_log = False  # millions of evaluation searches are not an audit trail
        write_silo_settings(silo_dir, settings)
        if on_silo is not None:
            on_silo(name, len(parts[name]))
        service = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=encoder).open()
        try:
            service.ingest(parts[name])
        finally:
            service.close()
    manifest.write_text(json.dumps(config, indent=1), encoding="utf-8")  # written last: a crash rebuilds
    return BuiltFederation(root, silo_docs)


def _silo_env(noisy: NoisySelectionSettings | None, search: SearchMode) -> dict[str, str]:
    env: dict[str, str] = {"FEDRAG_SILO_SEARCH__MODE": search}
    if noisy is not None:
        env |= {
            f"FEDRAG_SILO_POLICY__NOISY_SELECTION__{key.upper()}": json.dumps(value)
            for key, value in noisy.model_dump().items()
        }
    return env


@contextlib.asynccontextmanager
async def serve_silos(
    federation: BuiltFederation,
    *,
    mode: ServeMode = "inprocess",
    noisy: NoisySelectionSettings | None = None,
    encoder: Encoder | None = None,
    search: SearchMode = "dense",
) -> AsyncIterator[tuple[Membership, dict[str, httpx.AsyncBaseTransport]]]:
    """Serve every silo; yield the membership (with reachable URLs) and per-silo transports.

    Args:
        federation: what :func:`build_federation` built.
        mode: ``inprocess`` (app factory + ASGI transport) or ``process`` (``fedrag silo serve``).
        noisy: the release policy's noisy selection for this configuration (None: as built, off).
        search: how every silo ranks (its ``search.mode``).
        encoder: shared with in-process silos so the model is loaded once.
    """
    membership = federation.membership()
    if mode == "process":
        with contextlib.ExitStack() as stack:
            urls = dict(stack.enter_context(_silo_processes(federation, membership, _silo_env(noisy, search))))
            served = membership
            for entry in membership.silos:
                served = served.with_silo(entry.model_copy(update={"url": urls[entry.name]}))
            yield served, {}
        return
    from silo_node.app import create_app

    async with contextlib.AsyncExitStack() as stack:
        transports: dict[str, httpx.AsyncBaseTransport] = {}
        for entry in membership.silos:
            silo_dir = federation.silo_dir(entry.name)
            settings = load_silo_settings(silo_dir)
            if noisy is not None:
                settings.policy.noisy_selection = noisy
            settings.search.mode = search
            app = create_app(silo_dir, settings, encoder=encoder)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transports[entry.name] = httpx.ASGITransport(app=app)
        yield membership, transports


@contextlib.contextmanager
def _silo_processes(
    federation: BuiltFederation, membership: Membership, env: dict[str, str]
) -> Iterator[Iterator[tuple[str, str]]]:
    from silo_node.demo import running_silo

    with contextlib.ExitStack() as stack:
        urls = [
            (entry.name, stack.enter_context(running_silo(federation.silo_dir(entry.name), free_port(), env=env)))
            for entry in membership.silos
        ]
        yield iter(urls)
