"""The embedding model run by OpenVINO on CPU: the same vectors as sentence-transformers, faster.

:class:`OpenVINOEncoder` converts the installed sentence-transformers model folder (its
transformer, with the folder's own tokenizer, mean pooling and normalisation) to an
OpenVINO model with ``openvino.convert_model``, offline, and keeps the converted files in a
cache directory so later starts skip the conversion. The weights stay float32 on disk; the
``openvino`` backend computes in float32 (on 2 cores 1.3-1.5x torch's chunks/s for
~1,000-character chunks, the same vectors to 1e-5), ``openvino-bf16`` in bfloat16 on a CPU that
computes in it (AMX or AVX-512 BF16: 3.7x torch, cosine above 0.9999 to the torch vectors and
overlap@10 above 0.99; ``bench/bench_encoder.py``). On a CPU without bfloat16 the bf16 backend
computes in float32, with a warning: its vectors are then the float32 ones, within cosine 1e-4
of a bfloat16 party's. The backend is part of the fingerprint
(:func:`federation.encoder.encoder_fingerprint`), so a federation says which one every party
runs and refuses vectors from another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from federation.encoder import DEFAULT_MODEL_ID, default_model_path, encoder_fingerprint
from federation.errors import ConfigError
from federation.membership import EmbeddingSpec

logger = logging.getLogger(__name__)

BACKEND = "openvino"
BF16_BACKEND = "openvino-bf16"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_cache_dir() -> Path:
    """Where converted models are kept: ``$FEDRAG_CACHE_DIR/openvino`` or ``~/.cache/fedrag/openvino``."""
    root = os.environ.get("FEDRAG_CACHE_DIR") or Path.home() / ".cache" / "fedrag"
    return Path(root) / "openvino"


def _sentence_transformers_layout(model_path: Path) -> tuple[int, int]:
    """(max sequence length, dimension) of a mean-pooling sentence-transformers folder; ConfigError otherwise."""
    try:
        modules = json.loads((model_path / "modules.json").read_text(encoding="utf-8"))
        pooling_dir = next(m["path"] for m in modules if m["type"].endswith(".Pooling"))
        pooling = json.loads((model_path / pooling_dir / "config.json").read_text(encoding="utf-8"))
        settings = json.loads((model_path / "sentence_bert_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise ConfigError(f"{model_path} is not a sentence-transformers model folder: {exc}") from exc
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        raise ConfigError(f"the OpenVINO backend runs mean-pooling models only; {model_path} pools by {modes}")
    return int(settings.get("max_seq_length", 512)), int(pooling["word_embedding_dimension"])


class OpenVINOEncoder:
    """The sentence-transformers model folder, converted to OpenVINO and run on CPU.

    Args:
        model_path: the sentence-transformers folder (default: the packaged all-MiniLM-L6-v2).
        model_id: the id written in the membership file.
        cache_dir: where the converted model is kept (default :func:`default_cache_dir`); an
            unwritable cache only costs a conversion (seconds) at each start.
        threads: CPU threads per inference (default: every core this process may use).
        bfloat16: compute in bfloat16 (the ``openvino-bf16`` backend) where the CPU can.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        model_id: str = DEFAULT_MODEL_ID,
        cache_dir: Path | None = None,
        threads: int | None = None,
        bfloat16: bool = False,
    ) -> None:
        self._backend = BF16_BACKEND if bfloat16 else BACKEND
        self._path = Path(model_path) if model_path is not None else default_model_path()
        self._model_id = model_id
        self._cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        self._threads = threads or len(affinity)
        self._max_length, self._dimension = _sentence_transformers_layout(self._path)
        self._lock = threading.Lock()
        self._compiled: Any = None
        self._tokenizer: Any = None

    @property
    def model_id(self) -> str:
        """Model id (as written in the membership file)."""
        return self._model_id

    @property
    def backend(self) -> str:
        """``openvino`` or ``openvino-bf16``."""
        return self._backend

    @property
    def fingerprint(self) -> str:
        """Hash of the model files and the backend."""
        return encoder_fingerprint(self._path, self._backend)

    @property
    def dimension(self) -> int:
        """Embedding dimension."""
        return self._dimension

    def spec(self) -> EmbeddingSpec:
        """The membership file's ``[embedding]`` section for this encoder."""
        return EmbeddingSpec(
            model=self.model_id, dimension=self.dimension, fingerprint=self.fingerprint, backend=self._backend
        )

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._compiled is None:
                try:
                    import openvino as ov
                except ImportError as exc:
                    raise ConfigError("the OpenVINO backend needs: pip install 'fedrag-serve[openvino]'") from exc
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(str(self._path), local_files_only=True)
                model = self._converted(ov)
                core = ov.Core()
                self._compiled = core.compile_model(
                    model,
                    "CPU",
                    {"INFERENCE_NUM_THREADS": self._threads, "INFERENCE_PRECISION_HINT": self._precision(core)},
                )
            return self._compiled, self._tokenizer

    def _precision(self, core: Any) -> str:
        """``bf16`` for the bf16 backend on a CPU that computes in it, else ``f32``."""
        if self._backend != BF16_BACKEND:
            return "f32"
        if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            return "bf16"
        logger.warning(
            "this CPU does not compute in bfloat16: the openvino-bf16 encoder runs in float32 here "
            "(vectors within cosine 1e-4 of the bfloat16 ones)"
        )
        return "f32"

    def _converted(self, ov: Any) -> Any:
        """The OpenVINO model: from the cache, else converted from the folder's torch weights (and cached)."""
        # The converted model is the same for both precisions (it is chosen when compiling).
        key = hashlib.sha256(f"{encoder_fingerprint(self._path, BACKEND)}|{ov.__version__}".encode()).hexdigest()[:24]
        cached = self._cache_dir / key / "model.xml"
        if cached.is_file():
            try:
                return ov.Core().read_model(str(cached))
            except RuntimeError as exc:  # a torn or foreign file: convert again
                logger.warning("converted model in %s unusable, converting again: %s", cached.parent, exc)
        import torch
        from torch.jit._trace import TracerWarning
        from transformers import AutoModel

        logger.info("converting the embedding model to OpenVINO", extra={"model_path": str(self._path)})
        transformer = AutoModel.from_pretrained(str(self._path), local_files_only=True).eval()

        class _LastHiddenState(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                return self.inner(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state

        sample = {name: torch.ones((2, 8), dtype=torch.long) for name in _INPUTS}
        with torch.no_grad(), warnings.catch_warnings():
            # Tracing notes that shape checks become constants: without a key-value cache they are.
            warnings.simplefilter("ignore", TracerWarning)
            model = ov.convert_model(_LastHiddenState(transformer), example_input=sample)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name("model.partial.xml")
            ov.save_model(model, str(partial), compress_to_fp16=False)  # float32: the vectors must not change
            partial.with_suffix(".bin").replace(cached.with_suffix(".bin"))
            partial.replace(cached)
        except OSError as exc:
            logger.warning("cannot cache the converted model in %s (%s); converting at every start", cached, exc)
        return model

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` into unit-length float32 rows (batches of similar length, as sentence-transformers)."""
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        compiled, tokenizer = self._load()
        request = compiled.create_infer_request()  # one per call: callers may encode from several threads
        cleaned = [str(t).strip() for t in texts]
        order = np.argsort([-len(t) for t in cleaned], kind="stable")
        result = np.empty((len(cleaned), self.dimension), dtype=np.float32)
        for start in range(0, len(cleaned), batch_size):
            picked = order[start : start + batch_size]
            batch = tokenizer(
                [cleaned[i] for i in picked],
                padding=True,
                truncation="longest_first",
                max_length=self._max_length,
                return_tensors="np",
            )
            inputs = {name: batch[name].astype(np.int64) for name in _INPUTS if name in batch}
            hidden = request.infer(inputs)[0]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            result[picked] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return result

    def __repr__(self) -> str:
        return f"OpenVINOEncoder(model_id={self._model_id!r}, path={str(self._path)!r}, backend={self._backend!r})"
