"""The silo's durable store: documents, chunks and their embeddings in SQLite (WAL).

The store is the source of truth. The vector index is a cache derived from it: every
change to the chunk set is written to a ``changes`` log in the same transaction as the
change itself, so an index snapshot that records the last sequence number it reflects can
always be brought up to date (or rebuilt) after a crash. Chunk ids come from
``AUTOINCREMENT`` and are never reused. Deleted rows are overwritten on disk
(``secure_delete``), so a deleted document's text does not linger in free pages.

Beside the chunks, a contentless FTS5 table indexes each chunk's title and text for BM25
search (``lexical_search``), written in the same transactions. It keeps no copy of the
text; a removed chunk's terms are deleted from it at once, and :meth:`SiloStore.purge_removed`
(run after a deletion, and after an ingestion that replaced documents) merges the index's
segments and checkpoints the write-ahead log, so neither keeps them on disk.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federation.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    metadata TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    text TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('add', 'del'))
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Contentless (no second copy of the text); porter stemming over unicode61 words, so
# "treated" matches "treatment" and identifiers split at punctuation ("os.path" -> os, path).
_LEXICAL_SCHEMA = (
    "CREATE VIRTUAL TABLE lexical USING fts5(title, text, content='', tokenize='porter unicode61 remove_diacritics 2')"
)
_LEXICAL_VERSION = "1"
_QUERY_WORD_RE = re.compile(r"\w+")
MAX_QUERY_WORDS = 64


@dataclass(frozen=True)
class StoredChunk:
    """A chunk with its document's title and metadata, as the search path needs it."""

    chunk_id: int
    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class DocumentRecord:
    """A document ready to store: its chunks and their embeddings."""

    doc_id: str
    content_hash: str
    title: str
    source: str
    metadata: dict[str, Any]
    chunks: Sequence[str]
    embeddings: np.ndarray


@dataclass(frozen=True)
class DocumentInfo:
    """One document as listed to the operator."""

    doc_id: str
    title: str
    source: str
    chunk_count: int
    content_hash: str
    updated_at: float


@dataclass(frozen=True)
class ChangeSet:
    """Chunk ids added and removed since a sequence number, and the newest sequence number."""

    seq: int
    added: list[int]
    removed: list[int]


class SiloStore:
    """SQLite store; safe to share between threads (one connection behind a lock)."""

    def __init__(self, path: Path, *, dimension: int) -> None:
        self._path = Path(path)
        self._dimension = dimension
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        stored = self._get_meta("dimension")
        if stored is None:
            self._set_meta("dimension", str(dimension))
        elif int(stored) != dimension:
            raise ConfigError(f"{self._path} holds {stored}-dimensional embeddings, not {dimension}")
        self._ensure_lexical_index()

    def _ensure_lexical_index(self) -> None:
        """Create the lexical index, filled from the chunks (stores written before it existed)."""
        if self._get_meta("lexical_version") == _LEXICAL_VERSION:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._get_meta("lexical_version") == _LEXICAL_VERSION:  # another process built it meanwhile
                    self._db.execute("ROLLBACK")
                    return
                self._db.execute("DROP TABLE IF EXISTS lexical")
                self._db.execute(_LEXICAL_SCHEMA)
                self._db.execute(
                    "INSERT INTO lexical(rowid, title, text) SELECT c.chunk_id, d.title, c.text "
                    "FROM chunks c JOIN documents d ON d.doc_id = c.doc_id"
                )
                self._set_meta("lexical_version", _LEXICAL_VERSION)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def path(self) -> Path:
        """Path of the database file."""
        return self._path

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def document_hash(self, doc_id: str) -> str | None:
        """Content hash of the stored document, or None when absent."""
        with self._lock:
            row = self._db.execute("SELECT content_hash FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return None if row is None else str(row[0])

    def upsert_documents(self, documents: Sequence[DocumentRecord]) -> list[list[int]]:
        """Store documents and their chunks in one durable transaction, replacing older versions.

        Returns:
            The new chunk ids of each document. When this returns, the documents survive a crash.
        """
        for doc in documents:
            if len(doc.chunks) != len(doc.embeddings) or not doc.chunks:
                raise ValueError(f"{doc.doc_id}: needs one embedding per chunk and at least one chunk")
            if doc.embeddings.shape[1] != self._dimension:
                raise ValueError(f"embeddings have dimension {doc.embeddings.shape[1]}, store holds {self._dimension}")
        all_ids: list[list[int]] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for doc in documents:
                    self._delete_chunks(doc.doc_id)
                    self._db.execute(
                        "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            doc.doc_id,
                            doc.content_hash,
                            doc.title,
                            doc.source,
                            json.dumps(doc.metadata),
                            len(doc.chunks),
                            time.time(),
                        ),
                    )
                    vectors = np.ascontiguousarray(doc.embeddings, dtype="<f4")
                    ids = []
                    for ord_, (text, vector) in enumerate(zip(doc.chunks, vectors, strict=True)):
                        cur = self._db.execute(
                            "INSERT INTO chunks(doc_id, ord, text, embedding) VALUES (?, ?, ?, ?)",
                            (doc.doc_id, ord_, text, vector.tobytes()),
                        )
                        ids.append(int(cur.lastrowid or 0))
                    self._db.executemany(
                        "INSERT INTO lexical(rowid, title, text) VALUES (?, ?, ?)",
                        [(cid, doc.title, text) for cid, text in zip(ids, doc.chunks, strict=True)],
                    )
                    self._db.executemany("INSERT INTO changes(chunk_id, op) VALUES (?, 'add')", [(i,) for i in ids])
                    all_ids.append(ids)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return all_ids

    def _delete_chunks(self, doc_id: str) -> int:
        """Remove a document's chunks (inside the caller's transaction), from the lexical index too."""
        rows = self._db.execute(
            "SELECT c.chunk_id, d.title, c.text FROM chunks c JOIN documents d ON d.doc_id = c.doc_id "
            "WHERE c.doc_id = ?",
            (doc_id,),
        ).fetchall()
        # A contentless FTS5 row is deleted by giving back exactly the values it was indexed with.
        self._db.executemany("INSERT INTO lexical(lexical, rowid, title, text) VALUES ('delete', ?, ?, ?)", rows)
        self._db.executemany("INSERT INTO changes(chunk_id, op) VALUES (?, 'del')", [(r[0],) for r in rows])
        self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        return len(rows)

    def purge_removed(self) -> None:
        """Make removed chunks leave the disk now.

        Run after a deletion, or an ingestion that replaced documents: merges the lexical index's
        segments, dropping removed terms (seconds for 100k chunks), and checkpoints the
        write-ahead log, dropping old page images.
        """
        with self._lock:
            self._db.execute("INSERT INTO lexical(lexical) VALUES ('optimize')")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def lexical_search(self, text: str, limit: int) -> list[tuple[int, float]]:
        """Chunk ids matching any word of ``text``, best BM25 first: (chunk id, BM25 score, higher better)."""
        words = list(dict.fromkeys(w.casefold() for w in _QUERY_WORD_RE.findall(text)))[:MAX_QUERY_WORDS]
        if not words or limit < 1:
            return []
        # Each word is a quoted FTS5 string, so no word is read as query syntax (AND, NEAR, column:).
        query = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        with self._lock:
            rows = self._db.execute(
                "SELECT rowid, bm25(lexical) FROM lexical WHERE lexical MATCH ? ORDER BY rank LIMIT ?", (query, limit)
            ).fetchall()
        return [(int(r[0]), -float(r[1])) for r in rows]

    def delete_document(self, doc_id: str) -> int | None:
        """Delete a document and its chunks durably; return the chunk count, None if unknown."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                exists = self._db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
                if exists is None:
                    self._db.execute("ROLLBACK")
                    return None
                removed = self._delete_chunks(doc_id)
                self._db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self.purge_removed()
        return removed

    def last_seq(self) -> int:
        """Sequence number of the newest change (0 when none)."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(row[0])

    def changes_since(self, seq: int) -> ChangeSet:
        """Net chunk additions and removals after ``seq`` (ids are never reused)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, chunk_id, op FROM changes WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        removed = {int(r[1]) for r in rows if r[2] == "del"}
        added = [int(r[1]) for r in rows if r[2] == "add" and int(r[1]) not in removed]
        newest = int(rows[-1][0]) if rows else seq
        return ChangeSet(seq=newest, added=added, removed=sorted(removed))

    def embeddings(self, chunk_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of those ``chunk_ids`` that still exist: (ids int64, vectors float32)."""
        found_ids: list[int] = []
        vectors: list[np.ndarray] = []
        with self._lock:
            for start in range(0, len(chunk_ids), 500):
                batch = list(chunk_ids[start : start + 500])
                marks = ",".join("?" * len(batch))
                for cid, blob in self._db.execute(
                    f"SELECT chunk_id, embedding FROM chunks WHERE chunk_id IN ({marks})",  # noqa: S608
                    batch,
                ):
                    found_ids.append(int(cid))
                    vectors.append(np.frombuffer(blob, dtype="<f4"))
        if not vectors:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self._dimension), dtype=np.float32)
        return np.asarray(found_ids, dtype=np.int64), np.vstack(vectors).astype(np.float32)

    def snapshot_all(self, batch_size: int = 10_000) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]:
        """Newest sequence number and an iterator over every live (ids, vectors) batch, read consistently."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])
                rows = self._db.execute("SELECT chunk_id, embedding FROM chunks ORDER BY chunk_id").fetchall()
            finally:
                self._db.execute("COMMIT")

        def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for start in range(0, len(rows), batch_size):
                part = rows[start : start + batch_size]
                ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
                vectors = np.frombuffer(b"".join(r[1] for r in part), dtype="<f4").reshape(len(part), self._dimension)
                yield ids, vectors.astype(np.float32)

        return seq, batches()

    def chunks(self, chunk_ids: Sequence[int]) -> dict[int, StoredChunk]:
        """The chunks with these ids that still exist, with their document's title and metadata."""
        if not chunk_ids:
            return {}
        marks = ",".join("?" * len(chunk_ids))
        with self._lock:
            rows = self._db.execute(
                "SELECT c.chunk_id, c.doc_id, d.title, c.text, d.metadata FROM chunks c "  # noqa: S608
                f"JOIN documents d ON d.doc_id = c.doc_id WHERE c.chunk_id IN ({marks})",
                list(chunk_ids),
            ).fetchall()
        return {
            int(r[0]): StoredChunk(chunk_id=int(r[0]), doc_id=r[1], title=r[2], text=r[3], metadata=json.loads(r[4]))
            for r in rows
        }

    def document_chunks(self, doc_id: str) -> list[StoredChunk]:
        """A document's chunks in order (empty when it does not exist)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.chunk_id, c.doc_id, d.title, c.text, d.metadata FROM chunks c "
                "JOIN documents d ON d.doc_id = c.doc_id WHERE c.doc_id = ? ORDER BY c.ord",
                (doc_id,),
            ).fetchall()
        return [
            StoredChunk(chunk_id=int(r[0]), doc_id=r[1], title=r[2], text=r[3], metadata=json.loads(r[4])) for r in rows
        ]

    def first_chunks(self, *, offset: int = 0, limit: int = 100) -> list[StoredChunk]:
        """Each document's first chunk, documents ordered by id, paginated."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.chunk_id, c.doc_id, d.title, c.text, d.metadata FROM documents d "
                "JOIN chunks c ON c.doc_id = d.doc_id AND c.ord = 0 ORDER BY d.doc_id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [
            StoredChunk(chunk_id=int(r[0]), doc_id=r[1], title=r[2], text=r[3], metadata=json.loads(r[4])) for r in rows
        ]

    def list_documents(self, *, offset: int = 0, limit: int = 100) -> list[DocumentInfo]:
        """Documents ordered by id, paginated."""
        with self._lock:
            rows = self._db.execute(
                "SELECT doc_id, title, source, chunk_count, content_hash, updated_at FROM documents "
                "ORDER BY doc_id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [DocumentInfo(*row) for row in rows]

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        with self._lock:
            docs = int(self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
            chunks = int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
        return docs, chunks

    def integrity_ok(self) -> bool:
        """Run SQLite's integrity check."""
        with self._lock:
            row = self._db.execute("PRAGMA integrity_check").fetchone()
        return bool(row and row[0] == "ok")
