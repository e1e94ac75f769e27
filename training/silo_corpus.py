"""A silo's own documents and search, as training reads them (in the silo, never over the network)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from federation.config import load_silo_settings
from federation.encoder import Encoder
from federation.errors import Forbidden
from silo_node.policy.redaction import Redactor
from silo_node.service import SiloService
from silo_node.store import StoredChunk


class LocalSiloCorpus:
    """Open a silo directory for training: its store, its index, its encoder and PII rules.

    Args:
        silo_dir: the silo's data directory (with ``silo.toml``).
        encoder: the federation's encoder (loaded on first search when omitted).

    Raises:
        Forbidden: the silo's policy does not allow training (``policy.training.allowed``).
    """

    def __init__(self, silo_dir: Path, *, encoder: Encoder | None = None) -> None:
        settings = load_silo_settings(silo_dir)
        if not settings.policy.training.allowed:
            raise Forbidden(
                f"silo '{settings.name}' does not take part in training: its operator has not set "
                "policy.training.allowed = true in silo.toml",
                code="training_not_allowed",
            )
        self.settings = settings
        self.name = settings.name
        self._service = SiloService(settings, Path(silo_dir), encoder=encoder).open()
        policy = settings.policy
        self._redactor = Redactor(policy.redaction_patterns) if policy.redact_pii else None

    def first_chunks(self, *, offset: int = 0, limit: int = 100) -> list[StoredChunk]:
        """Each document's first chunk, ordered by document id."""
        return self._service.store.first_chunks(offset=offset, limit=limit)

    def document_chunks(self, doc_id: str) -> list[StoredChunk]:
        """One document's chunks in order."""
        return self._service.store.document_chunks(doc_id)

    def search(self, questions: Sequence[str], k: int) -> list[list[StoredChunk]]:
        """The silo's top-``k`` chunks for each question, best first."""
        if not questions:
            return []
        vectors = np.asarray(self._service.encoder.encode(list(questions)), dtype=np.float32)
        results: list[list[StoredChunk]] = []
        for vector in vectors:
            _, ids = self._service.index.search(vector / max(float(np.linalg.norm(vector)), 1e-12), k)
            found = [int(i) for i in ids[0] if i >= 0]
            chunks = self._service.store.chunks(found)
            results.append([chunks[i] for i in found if i in chunks])
        return results

    def store_version(self) -> int:
        """The store's newest change number (any ingestion or deletion changes it)."""
        return self._service.store.last_seq()

    def redact(self, text: str) -> str:
        """The text with the silo's PII rules applied (unchanged when redaction is off)."""
        return self._redactor.redact(text)[0] if self._redactor else text

    def close(self) -> None:
        """Release the store and the index (nothing is written: training changes no silo data)."""
        self._service.executor.shutdown(wait=True)
        self._service.store.close()

    def __enter__(self) -> LocalSiloCorpus:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
