"""The silo service: store, live index, encoder and release policy behind one object.

The HTTP app and the operator CLI both drive a silo through this class, so they share one
behaviour. Blocking work (index, store, encoder) runs in the service's own thread pool
when called from the event loop (the ``a*`` methods).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from federation.config import SiloSettings
from federation.encoder import Encoder, encoder_for
from federation.errors import ConfigError, Conflict, NotFound, ValidationFailed
from federation.identity import Identity
from federation.membership import Membership, load_membership
from federation.protocol import SearchHit, SearchMode, SearchRequest, SearchResponse, SiloCard, shard_of
from federation.redis_state import RedisReplayCache, RedisState
from federation.signing import NonceCache, ReplayCache, RequestVerifier
from silo_node.card import build_card
from silo_node.index import set_search_threads
from silo_node.indexer import Indexer, IngestReport
from silo_node.ingest import IngestProblem, SourceDocument
from silo_node.live_index import LiveIndex
from silo_node.policy import AuditLog, Candidate, ReleasePolicy, alerts_in_window
from silo_node.ranking import fuse_ranks, rank_scores
from silo_node.store import DocumentInfo, SiloStore, StoredChunk

logger = logging.getLogger(__name__)

DB_FILE = "silo.db"
INDEX_FILE = "index.bin"
AUDIT_FILE = "audit.jsonl"
_CARD_SAMPLE = 20_000

_P = ParamSpec("_P")
_T = TypeVar("_T")


class SiloService:
    """One silo: open it, search it, feed it, describe it.

    Args:
        settings: the silo's settings (``load_silo_settings(DIR)``).
        silo_dir: the silo's data directory.
        encoder: the embedding encoder; created on first ingestion when omitted (a silo
            that only serves searches never loads the model).
    """

    def __init__(self, settings: SiloSettings, silo_dir: Path, *, encoder: Encoder | None = None) -> None:
        self.settings = settings
        self.silo_dir = Path(silo_dir)
        self.membership: Membership = load_membership(settings.federation_file)
        self.identity = Identity.load(settings.key_file)
        self._check_membership()
        self.dimension = self.membership.embedding.dimension
        self.store = SiloStore(self.silo_dir / DB_FILE, dimension=self.dimension)
        self.audit = AuditLog(self.silo_dir / AUDIT_FILE) if settings.policy.audit_log else None
        self.policy = ReleasePolicy(settings.policy, audit=self.audit)
        self.index = LiveIndex(
            self.store, settings.index, self.dimension, self.silo_dir / INDEX_FILE, on_removed=self.policy.forget
        )
        self._encoder = encoder
        # The nonce replay cache shared by every worker serving this silo (connects on first use).
        self.state = RedisState(settings.state_url, namespace=self.membership.name) if settings.state_url else None
        if self.state is not None and (settings.policy.noisy_selection.enabled or settings.policy.crawl.enabled):
            logger.warning(
                "silo '%s': per-key noisy-selection budgets and crawl limits are kept by each worker, not in the "
                "state store: with several workers a gateway key gets up to that many times them",
                settings.name,
            )
        self._card: tuple[int, SiloCard] | None = None
        self._saved_seq = -1
        self.executor = ThreadPoolExecutor(
            max_workers=settings.worker_threads, thread_name_prefix=f"silo-{settings.name}"
        )

    def _check_membership(self) -> None:
        entry = next((s for s in self.membership.silos if s.name == self.settings.name), None)
        if entry is None:
            logger.warning(
                "silo '%s' is not yet listed in federation '%s'; gateways cannot route to it",
                self.settings.name,
                self.membership.name,
            )
        elif entry.key_id != self.identity.key_id:
            raise ConfigError(
                f"the membership file lists silo '{entry.name}' with key {entry.key_id}, "
                f"but {self.settings.key_file} holds {self.identity.key_id}"
            )

    # lifecycle -----------------------------------------------------------------------
    def open(self) -> SiloService:
        """Load (or rebuild) the index and catch up with the store."""
        set_search_threads(self.settings.index.search_threads)
        self.index.open()
        self._saved_seq = -1 if self.index.rebuilt_on_open else self.index.seq
        return self

    def close(self) -> None:
        """Persist the index snapshot if it changed, release resources."""
        self.save_index()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.store.close()
        if self.state is not None:
            self.state.close()

    def save_index(self) -> None:
        """Write the index snapshot when it is behind the store."""
        self.index.sync()
        if self.index.seq != self._saved_seq:
            self.index.save()
            self._saved_seq = self.index.seq

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run blocking ``fn`` in the service's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(fn, *args, **kwargs))

    @property
    def encoder(self) -> Encoder:
        """The encoder, created on first use and checked against the federation's contract."""
        if self._encoder is None:
            self._encoder = encoder_for(self.membership.embedding)
        spec = self.membership.embedding
        if self._encoder.fingerprint != spec.fingerprint:
            raise ConfigError(
                f"encoder fingerprint {self._encoder.fingerprint} differs from the federation's {spec.fingerprint}"
            )
        return self._encoder

    def verifier(self) -> RequestVerifier:
        """A verifier for requests addressed to this silo, trusting the federation's gateways."""
        silo_keys = self.membership.silo_keys()
        ttl_s = 2 * self.settings.clock_skew_s + 1
        replay: NonceCache = (
            ReplayCache(ttl_s, self.settings.replay_cache_size)
            if self.state is None
            else RedisReplayCache(self.state, self.settings.name, ttl_s)
        )
        return RequestVerifier(
            self.membership.gateway_keys(),
            self.settings.name,
            known_but_not_allowed={k: f"key of silo '{n}': only gateways may call silos" for k, n in silo_keys.items()},
            clock_skew_s=self.settings.clock_skew_s,
            replay_cache=replay,
        )

    # search -------------------------------------------------------------------------
    def search(self, client_id: str, request: SearchRequest) -> SearchResponse:
        """Search for one query and release what the policy allows."""
        started = time.perf_counter()
        spec = self.membership.embedding
        if request.fingerprint != spec.fingerprint:
            raise Conflict(
                f"query was embedded by another model (fingerprint mismatch); this federation uses {spec.model}",
                code="fingerprint_mismatch",
            )
        query = request.vector.to_numpy()[0]
        if query.shape[0] != self.dimension:
            raise ValidationFailed(
                f"vector has dimension {query.shape[0]}; this federation's is {self.dimension}", code="wrong_dimension"
            )
        norm = float(np.linalg.norm(query))
        if norm == 0.0:
            raise ValidationFailed("vector must not be all zeros", code="zero_vector")
        self.policy.check_budget(client_id, requested_k=request.k, request_id=request.request_id or "")
        wanted = self.policy.candidates_needed(request.k)
        found, mode, chunks = self._ranked_chunks(query / norm, request, wanted)
        candidates = [
            Candidate(
                chunk_id=i,
                doc_id=chunks[i].doc_id,
                title=chunks[i].title,
                text=chunks[i].text,
                score=min(1.0, max(-1.0, s)),
                metadata=chunks[i].metadata,
            )
            for s, i in found
            if i in chunks
        ]
        release = self.policy.apply(
            client_id, request.k, candidates, request_id=request.request_id or "", corpus_size=len(self.index)
        )
        hits = [
            SearchHit(
                chunk_id=f"{self.settings.name}:{h.chunk_id}",
                doc_id=h.doc_id,
                title=h.title,
                text=h.text,
                score=h.score,
                metadata=h.metadata,
            )
            for h in release.hits
        ]
        return SearchResponse(
            silo=self.settings.name,
            request_id=request.request_id,
            hits=hits,
            k_effective=release.k_effective,
            epsilon_spent=release.epsilon_spent,
            redactions=release.redactions,
            took_ms=(time.perf_counter() - started) * 1000,
            search=mode,
        )

    def _ranked_chunks(
        self, query: np.ndarray, request: SearchRequest, wanted: int
    ) -> tuple[list[tuple[float, int]], SearchMode, dict[int, StoredChunk]]:
        """The best ``wanted`` (score, chunk id) of the request's documents, with their chunks.

        The request's documents: those of its shard (all without one), less the excluded ones,
        as if the others were absent. The search goes deeper until ``wanted`` of them are found
        or the index is exhausted, so on an exact index the result is their exact top ``wanted``.
        """
        shard, excluded = request.shard, frozenset(request.exclude_doc_ids or ())
        if shard is None and not excluded:
            found, mode = self._rank(query, request.text, wanted)
            return found, mode, self.store.chunks([i for _, i in found])

        def included(doc_id: str) -> bool:
            in_shard = shard is None or shard_of(self.settings.name, doc_id, shard.count) == shard.index
            return in_shard and doc_id not in excluded

        depth = wanted * (shard.count if shard is not None else 1) * 2 + len(excluded)
        while True:
            found, mode = self._rank(query, request.text, depth)
            chunks = self.store.chunks([i for _, i in found])
            mine = [(s, i) for s, i in found if i in chunks and included(chunks[i].doc_id)]
            if len(mine) >= wanted or len(found) < depth or depth >= len(self.index):
                mine = mine[:wanted]
                return mine, mode, {i: chunks[i] for _, i in mine}
            depth *= 4

    def _rank(self, query: np.ndarray, text: str | None, wanted: int) -> tuple[list[tuple[float, int]], SearchMode]:
        """The best ``wanted`` (score, chunk id) for a normalised query, and how they were ranked."""
        search = self.settings.search
        if search.mode == "dense" or not text:
            scores, ids = self.index.search(query, wanted)
            return [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0], "dense"
        pool = max(wanted, search.candidates)
        lexical = [chunk_id for chunk_id, _ in self.store.lexical_search(text, pool)]
        if search.mode == "lexical":
            order = lexical
        else:
            _, ids = self.index.search(query, pool)
            order = fuse_ranks([[int(i) for i in ids[0] if i >= 0], lexical], search.rrf_k)
        order = order[:wanted]
        found_ids, vectors = self.store.embeddings(order)
        return rank_scores(order, found_ids, vectors, query), search.mode

    # operator -----------------------------------------------------------------------
    def ingest(
        self,
        items: Iterable[SourceDocument | IngestProblem],
        *,
        on_chunks: Callable[[int], None] | None = None,
        on_ack: Callable[[str], None] | None = None,
    ) -> IngestReport:
        """Ingest documents, then bring the index up to date and snapshot it."""
        report = Indexer(self.store, self.encoder, self.settings.chunking).ingest(
            items, on_chunks=on_chunks, on_ack=on_ack
        )
        if report.updated:
            self.store.purge_removed()  # the replaced versions' text and terms leave the disk
        if report.documents:
            self.save_index()
            self.card()  # the next card request finds it ready
        return report

    def delete(self, doc_id: str) -> int:
        """Delete a document: gone from results at once, from disk durably. Returns its chunk count."""
        removed = self.store.delete_document(doc_id)
        if removed is None:
            raise NotFound(f"no document '{doc_id}' in this silo", code="document_not_found")
        self.save_index()
        self.card()
        return removed

    def documents(self, *, offset: int, limit: int) -> list[DocumentInfo]:
        """List documents."""
        return self.store.list_documents(offset=offset, limit=limit)

    def card(self) -> SiloCard:
        """The silo's card, recomputed when the index changed."""
        self.index.sync()
        if self._card is None or self._card[0] != self.index.seq:
            seq = self.index.seq
            vectors = self.index.vectors_sample(_CARD_SAMPLE, self.settings.card.seed)
            card = build_card(
                name=self.settings.name,
                description=self.settings.description,
                embedding=self.membership.embedding,
                chunk_count=len(self.index),
                vectors=vectors,
                policy=self.settings.policy,
                settings=self.settings.card,
                search=self.settings.search.mode,
            )
            self._card = (seq, card)
        return self._card[1]

    def stats(self) -> dict[str, Any]:
        """Counts and sizes for the operator."""
        documents, chunks = self.store.counts()
        index_path = self.silo_dir / INDEX_FILE
        return {
            "silo": self.settings.name,
            "federation": self.membership.name,
            "documents": documents,
            "chunks": chunks,
            "index_kind": self.index.kind,
            "index_vectors": len(self.index),
            "index_seq": self.index.seq,
            "store_bytes": self.store.path.stat().st_size,
            "index_bytes": index_path.stat().st_size if index_path.exists() else 0,
            "noisy_selection": self.settings.policy.noisy_selection.enabled,
            "search": self.settings.search.mode,
            "crawl": self.crawl_stats(),
        }

    def crawl_stats(self) -> dict[str, Any]:
        """The crawl controls and the alerts of the current window per gateway key id, read from the audit log."""
        crawl = self.settings.policy.crawl
        alerts = None
        if self.audit is not None:
            alerts = alerts_in_window(self.audit.records(), since=time.time() - crawl.window_s)
        return {
            "enabled": crawl.enabled,
            "controls": list(crawl.controls) if crawl.enabled else [],
            "window_s": crawl.window_s,
            "alerts_in_window": alerts,
        }
