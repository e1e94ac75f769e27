"""The in-memory vector index kept in step with the store, and its snapshot on disk.

The snapshot (``DIR/index.bin``) is written atomically with a checksum and records the
store sequence number it reflects. Opening verifies it: a missing, corrupt or
differently-configured snapshot is rebuilt from the embeddings in the store; a valid one
is brought up to date by replaying the store's change log. :meth:`LiveIndex.sync` runs
before every search, so a document deleted by another process (the operator CLI) leaves
the results at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from federation.config import IndexSettings
from silo_node.index import IndexCorrupt, VectorIndex, load_index, make_index, save_index
from silo_node.store import SiloStore

logger = logging.getLogger(__name__)


class LiveIndex:
    """A :class:`VectorIndex` plus the store sequence number it reflects.

    Thread-safe: the index itself lets searches run concurrently with each other and waits
    them out for mutations; this class serialises its own mutations (sync, save). ``on_removed``
    is called with the ids of the chunks each sync removes (the release policy forgets their text).
    """

    def __init__(
        self,
        store: SiloStore,
        settings: IndexSettings,
        dimension: int,
        snapshot_path: Path,
        *,
        on_removed: Callable[[Sequence[int]], None] | None = None,
    ) -> None:
        self._store = store
        self._on_removed = on_removed  # told the ids of chunks the store removed, once they leave the index
        self._settings = settings
        self._dimension = dimension
        self._path = Path(snapshot_path)
        self._lock = threading.Lock()
        self._index: VectorIndex = make_index(settings, dimension)
        self._seq = 0
        self.rebuilt_on_open = False

    @property
    def seq(self) -> int:
        """Store sequence number the index reflects."""
        return self._seq

    @property
    def kind(self) -> str:
        """Kind of the underlying index (e.g. ``faiss-flat``)."""
        return self._index.kind

    def __len__(self) -> int:
        return len(self._index)

    def open(self) -> None:
        """Load the snapshot if it is valid and matches the settings, else rebuild; then catch up."""
        try:
            index, meta = load_index(self._path, self._settings, self._dimension)
            if meta.get("backend") != self._settings.backend:
                raise IndexCorrupt(
                    f"snapshot holds a {meta.get('backend')} index, settings ask for {self._settings.backend}"
                )
            self._index, self._seq = index, int(meta["seq"])
            logger.info("index snapshot loaded", extra={"kind": index.kind, "vectors": len(index), "seq": self._seq})
        except FileNotFoundError:
            self._rebuild()
        except (IndexCorrupt, KeyError, ValueError) as exc:
            logger.warning("index snapshot unusable, rebuilding from the store: %s", exc)
            self.rebuilt_on_open = True
            self._rebuild()
        self.sync()

    def _rebuild(self) -> None:
        index = make_index(self._settings, self._dimension)
        seq, batches = self._store.snapshot_all()
        for ids, vectors in batches:
            index.add(ids, vectors)
        with self._lock:
            self._index, self._seq = index, seq
        logger.info("index rebuilt from the store", extra={"vectors": len(index), "seq": seq})

    def sync(self) -> bool:
        """Apply store changes made since the index's sequence number; return whether any were."""
        if self._store.last_seq() == self._seq:
            return False
        with self._lock:
            changes = self._store.changes_since(self._seq)
            if changes.removed:
                self._index.remove(changes.removed)
                if self._on_removed is not None:
                    self._on_removed(changes.removed)
            if changes.added:
                present = set(self._index.ids().tolist())
                fresh = [cid for cid in changes.added if cid not in present]
                ids, vectors = self._store.embeddings(fresh)
                if len(ids):
                    self._index.add(ids, vectors)
            self._seq = changes.seq
        return True

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) for one or more queries, after catching up with the store."""
        self.sync()
        queries = np.atleast_2d(np.asarray(query, dtype=np.float32))
        return self._index.search(queries, k)

    def vectors_sample(self, limit: int, seed: int) -> np.ndarray:
        """Up to ``limit`` live vectors chosen at random (for the card's centroids)."""
        ids = self._index.ids()
        if len(ids) > limit:
            ids = np.sort(np.random.default_rng(seed).choice(ids, size=limit, replace=False))
        _, vectors = self._store.embeddings(ids.tolist())
        return vectors

    def save(self) -> None:
        """Write the snapshot atomically (compacting removed vectors away)."""
        with self._lock:
            save_index(self._index, self._path, {"seq": self._seq, "backend": self._settings.backend})
