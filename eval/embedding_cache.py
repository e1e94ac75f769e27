"""An encoder that remembers what it embedded, so a harness run embeds each text once.

The same passages are ingested several times in one evaluation (the central index and
every partition of the federation are built from the same chunks), and a resumed run
builds again what a crashed one had built. :class:`CachingEncoder` wraps any
:class:`federation.encoder.Encoder`, keeps ``sha256(text) -> vector`` in memory and saves
it to one ``.npz`` file per encoder fingerprint, so a vector is never reused across models.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from federation.encoder import Encoder

__all__ = ["CachingEncoder"]

logger = logging.getLogger(__name__)


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CachingEncoder:
    """Wraps an encoder; texts seen before are answered from the cache (same vectors, same order)."""

    def __init__(self, inner: Encoder, cache_dir: Path | None = None) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] = {}
        self._unsaved = 0
        self.hits = 0
        self.misses = 0
        self._path = (
            None if cache_dir is None else Path(cache_dir) / f"embeddings-{inner.fingerprint.split(':')[-1][:16]}.npz"
        )
        if self._path is not None and self._path.is_file():
            try:
                with np.load(self._path, allow_pickle=False) as data:
                    keys, vectors = data["keys"], data["vectors"]
                self._vectors = {str(k): v for k, v in zip(keys, vectors, strict=True)}
            except (OSError, ValueError, KeyError) as exc:  # a torn or foreign file: start over
                logger.warning("embedding cache %s unreadable (%s): starting empty", self._path, exc)

    @property
    def inner(self) -> Encoder:
        """The wrapped encoder (questions are embedded with it, so their latency is real)."""
        return self._inner

    @property
    def model_id(self) -> str:
        """The wrapped encoder's model id."""
        return self._inner.model_id

    @property
    def dimension(self) -> int:
        """The wrapped encoder's dimension."""
        return self._inner.dimension

    @property
    def fingerprint(self) -> str:
        """The wrapped encoder's fingerprint (the cache never changes an output)."""
        return self._inner.fingerprint

    @property
    def backend(self) -> str:
        """What runs the wrapped encoder's model (``torch`` unless it says otherwise)."""
        return str(getattr(self._inner, "backend", "torch"))

    def __len__(self) -> int:
        return len(self._vectors)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts``, calling the wrapped encoder only for texts not seen before."""
        keys = [_key(t) for t in texts]
        with self._lock:
            missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._vectors}
        if missing:
            fresh = self._inner.encode(list(missing.values()), batch_size=batch_size, show_progress=show_progress)
            with self._lock:
                self._vectors.update(zip(missing, fresh, strict=True))
                self._unsaved += len(missing)
        with self._lock:
            self.misses += len(missing)
            self.hits += len(keys) - len(missing)
            if not keys:
                return np.zeros((0, self.dimension), dtype=np.float32)
            return np.stack([self._vectors[k] for k in keys]).astype(np.float32, copy=False)

    def save(self) -> None:
        """Write the cache (atomically) if it changed since the last save."""
        if self._path is None:
            return
        with self._lock:
            if not self._unsaved:
                return
            keys = np.array(list(self._vectors), dtype="<U64")
            vectors = np.stack(list(self._vectors.values())).astype(np.float32)
            self._unsaved = 0
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_name(self._path.name + ".partial.npz")
        np.savez(partial, keys=keys, vectors=vectors)
        os.replace(partial, self._path)
