"""Ingestion: source documents → chunks → batched embeddings → durable store.

Idempotent: a document whose content hash is already stored is skipped without
embedding. A changed document replaces its chunks. Documents are committed in batches;
``on_ack`` is called for each document only after its batch is durable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from federation.config import ChunkingSettings
from federation.encoder import Encoder
from silo_node.ingest import IngestProblem, SourceDocument, chunk_text
from silo_node.store import DocumentRecord, SiloStore

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingestion run did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    problems: list[IngestProblem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def documents(self) -> int:
        """Documents stored (added or updated)."""
        return self.added + self.updated


@dataclass
class _Pending:
    doc: SourceDocument
    chunks: list[str]
    replaces: bool


class Indexer:
    """Feeds documents into a silo's store."""

    def __init__(self, store: SiloStore, encoder: Encoder, chunking: ChunkingSettings) -> None:
        self._store = store
        self._encoder = encoder
        self._chunking = chunking

    def ingest(
        self,
        items: Iterable[SourceDocument | IngestProblem],
        *,
        on_chunks: Callable[[int], None] | None = None,
        on_ack: Callable[[str], None] | None = None,
    ) -> IngestReport:
        """Ingest documents (problems from the reader are passed through into the report).

        Args:
            items: documents and reading problems, as :func:`silo_node.ingest.iter_documents` yields.
            on_chunks: called with the number of chunks just embedded (progress bars).
            on_ack: called with each document id once it is durable.
        """
        started = time.perf_counter()
        report = IngestReport()
        pending: list[_Pending] = []
        pending_chunks = 0
        flush_at = self._chunking.batch_size * 4
        for item in items:
            if isinstance(item, IngestProblem):
                report.problems.append(item)
                logger.info("skipped %s: %s", item.source, item.reason)
                continue
            stored_hash = self._store.document_hash(item.doc_id)
            if stored_hash == item.content_hash:
                report.unchanged += 1
                continue
            chunks = chunk_text(
                item.text, max_chars=self._chunking.max_chars, overlap_chars=self._chunking.overlap_chars
            )
            if not chunks:
                report.problems.append(IngestProblem(source=item.source, reason="no text to index"))
                continue
            pending.append(_Pending(item, chunks, replaces=stored_hash is not None))
            pending_chunks += len(chunks)
            if pending_chunks >= flush_at:
                self._flush(pending, report, on_chunks, on_ack)
                pending, pending_chunks = [], 0
        if pending:
            self._flush(pending, report, on_chunks, on_ack)
        report.seconds = time.perf_counter() - started
        return report

    def _flush(
        self,
        pending: list[_Pending],
        report: IngestReport,
        on_chunks: Callable[[int], None] | None,
        on_ack: Callable[[str], None] | None,
    ) -> None:
        texts = [text for p in pending for text in p.chunks]
        vectors = self._encoder.encode(texts, batch_size=self._chunking.batch_size)
        if on_chunks is not None:
            on_chunks(len(texts))
        records = []
        offset = 0
        for p in pending:
            n = len(p.chunks)
            records.append(
                DocumentRecord(
                    doc_id=p.doc.doc_id,
                    content_hash=p.doc.content_hash,
                    title=p.doc.title,
                    source=p.doc.source,
                    metadata=p.doc.metadata,
                    chunks=p.chunks,
                    embeddings=vectors[offset : offset + n],
                )
            )
            offset += n
        self._store.upsert_documents(records)
        for p in pending:
            report.chunks += len(p.chunks)
            if p.replaces:
                report.updated += 1
            else:
                report.added += 1
            if on_ack is not None:
                on_ack(p.doc.doc_id)
