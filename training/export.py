"""A federated LoRA adapter (a peft directory) as a llama.cpp LoRA adapter (GGUF), for the embedded server.

vLLM serves the peft directory as it is (``--enable-lora --lora-modules NAME=DIR``); llama.cpp
needs the adapter as a GGUF file of its own, which :func:`export_llamacpp_lora` writes with the
``gguf`` package alone (no llama.cpp checkout, no torch, no hub). The file holds, for every
adapted linear module of block ``N``, the pair ``blk.N.<tensor>.weight.lora_a`` (peft's
``lora_A``, shape ``(r, in)``) and ``.lora_b`` (peft's ``lora_B``, ``(out, r)``), float32, and
the metadata ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``.

Two details make the served adapter compute what peft computes:

- llama.cpp scales each pair by ``alpha / r`` (``r`` read from the pair's shape), as peft does;
  where peft scales otherwise (rsLoRA: ``alpha / sqrt(r)``) the difference is folded into B.
- llama.cpp's HF→GGUF converter permutes the rows of the query and key projections (the rotary
  halves of each head are interleaved); the rows of B of ``q_proj`` / ``k_proj`` are permuted the
  same way, per query head and per key/value head. A is untouched.

The base model's GGUF gives the architecture, the head counts and every tensor's shape; an adapter
that does not fit it (another model's adapter, a module llama.cpp cannot adapt, a wrong shape) is
refused with the reason, before anything is written.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from federation.errors import ConfigError
from federation.files import atomic_target
from gateway.llm_server import model_path

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# peft module name -> llama.cpp tensor name, for the Llama family's linear layers.
LLAMA_MODULES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


@dataclass(frozen=True)
class _Base:
    """What the adapter must fit: the base GGUF's architecture, head counts and tensor shapes."""

    arch: str
    blocks: int
    heads: int
    kv_heads: int
    shapes: dict[str, tuple[int, int]]  # tensor name -> (out, in), numpy order


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - the training extra is missing
        raise ConfigError("exporting an adapter needs the gguf package: pip install 'fedrag-serve[training]'") from exc
    return gguf


@lru_cache(maxsize=4)
def _read_base(path: Path, size: int, mtime_ns: int) -> _Base:
    reader = _gguf().GGUFReader(path)

    def field(key: str) -> Any:
        entry = reader.fields.get(key)
        if entry is None:
            raise ConfigError(f"{path} has no {key}: not a llama.cpp model file")
        return entry.contents()

    arch = str(field("general.architecture"))
    if arch != "llama":
        raise ConfigError(f"{path} is a {arch!r} model; only Llama-family models (SmolLM2, Llama) are supported")
    shapes = {
        t.name: (int(t.shape[1]), int(t.shape[0])) for t in reader.tensors if len(t.shape) == 2
    }  # ggml's ne is (in, out)
    return _Base(
        arch=arch,
        blocks=int(field(f"{arch}.block_count")),
        heads=int(field(f"{arch}.attention.head_count")),
        kv_heads=int(field(f"{arch}.attention.head_count_kv")),
        shapes=shapes,
    )


def _base(path: Path) -> _Base:
    if not path.is_file():
        raise ConfigError(f"base model file {path} does not exist")
    stat = path.stat()
    return _read_base(path.resolve(), stat.st_size, stat.st_mtime_ns)


def _read_config(peft_dir: Path) -> dict[str, Any]:
    path = peft_dir / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{peft_dir} is not a peft adapter directory: {ADAPTER_CONFIG} is missing") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a JSON object")
    refusals = [
        (str(config.get("peft_type", "")).upper() != "LORA", f"peft_type is {config.get('peft_type')!r}, not LORA"),
        (bool(config.get("use_dora")), "DoRA adapters (use_dora) have no llama.cpp form"),
        (config.get("bias", "none") != "none", f"bias={config.get('bias')!r}: llama.cpp adapters carry no biases"),
        (bool(config.get("lora_bias")), "lora_bias: llama.cpp adapters carry no biases"),
        (bool(config.get("modules_to_save")), "modules_to_save: fully trained modules cannot be served as LoRA"),
        (bool(config.get("alpha_pattern")), "alpha_pattern (per-module alpha) is not supported"),
        (not isinstance(config.get("lora_alpha"), int | float), "lora_alpha is missing"),
    ]
    for refused, reason in refusals:
        if refused:
            raise ConfigError(f"{peft_dir}: cannot export this adapter for llama.cpp: {reason}")
    return config


def _read_weights(peft_dir: Path) -> dict[str, np.ndarray]:
    path = peft_dir / ADAPTER_WEIGHTS
    if not path.is_file():
        raise ConfigError(f"{peft_dir} is not a peft adapter directory: {ADAPTER_WEIGHTS} is missing")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as fh:
            return {key: np.asarray(fh.get_tensor(key), dtype=np.float32) for key in fh.keys()}  # noqa: SIM118
    except ImportError as exc:  # pragma: no cover - safetensors comes with transformers
        raise ConfigError("exporting an adapter needs safetensors") from exc
    except (OSError, ValueError, TypeError) as exc:  # safetensors raises its own error (a ValueError subclass)
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _permute_rows(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's HF→GGUF row order of a query/key projection: each head's two rotary halves interleaved."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _pairs(weights: dict[str, np.ndarray], base: _Base, peft_dir: Path) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in weights.items():
        match = _KEY.match(key)
        if match is None:
            raise ConfigError(
                f"{peft_dir}: tensor {key!r} is not a LoRA pair of a Llama linear layer "
                f"({', '.join(LLAMA_MODULES)}); llama.cpp cannot serve it"
            )
        layer, module, side = int(match[1]), match[2], match[3]
        if module not in LLAMA_MODULES:
            raise ConfigError(f"{peft_dir}: module {module!r} of {key!r} is not one of {', '.join(LLAMA_MODULES)}")
        if layer >= base.blocks:
            raise ConfigError(f"{peft_dir}: {key!r} adapts layer {layer}; the base model has {base.blocks} layers")
        if value.ndim != 2:
            raise ConfigError(f"{peft_dir}: {key!r} has shape {value.shape}, not a matrix")
        pairs.setdefault((layer, module), {})[side] = value
    if not pairs:
        raise ConfigError(f"{peft_dir}: the adapter holds no LoRA weights")
    return pairs


def _check_pair(layer: int, module: str, pair: dict[str, np.ndarray], base: _Base, peft_dir: Path) -> str:
    name = f"blk.{layer}.{LLAMA_MODULES[module]}.weight"
    where = f"layer {layer} {module}"
    if set(pair) != {"A", "B"}:
        raise ConfigError(f"{peft_dir}: {where} has lora_{''.join(pair)} but not its partner")
    if name not in base.shapes:
        raise ConfigError(f"{peft_dir}: the base model has no {name} for {where}")
    out_features, in_features = base.shapes[name]
    a, b = pair["A"], pair["B"]
    if a.shape[1] != in_features or b.shape[0] != out_features or a.shape[0] != b.shape[1]:
        raise ConfigError(
            f"{peft_dir}: {where} has lora_A {a.shape} and lora_B {b.shape}; the base model's {module} is "
            f"{out_features}x{in_features}, so they must be (r, {in_features}) and ({out_features}, r): "
            "an adapter of another model"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError(f"{peft_dir}: {where} holds non-finite weights")
    return name


def export_llamacpp_lora(peft_dir: Path, out_path: Path, *, base_gguf: Path | None = None) -> Path:
    """Write a peft LoRA adapter as a llama.cpp LoRA adapter (GGUF, float32), atomically.

    Any rank (also per module, ``rank_pattern``) and any subset of the Llama linear modules
    (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj``)
    of any layers; rsLoRA scaling is folded into B.

    Args:
        peft_dir: the adapter directory (``adapter_config.json``, ``adapter_model.safetensors``),
            as peft's ``save_pretrained`` writes it.
        out_path: the GGUF file to write (replaced atomically; readers never see half a file).
        base_gguf: the base model the adapter was trained on, as llama.cpp runs it (default:
            the embedded server's SmolLM2-135M-Instruct).

    Returns:
        ``out_path``.

    Raises:
        ConfigError: the directory is not a peft LoRA adapter, or the adapter does not fit the
            base model (architecture, module, layer or shape); the message says which.
    """
    peft_dir, out_path = Path(peft_dir), Path(out_path)
    base = _base(base_gguf or model_path())
    config = _read_config(peft_dir)
    pairs = _pairs(_read_weights(peft_dir), base, peft_dir)
    alpha = float(config["lora_alpha"])
    gguf = _gguf()
    tensors: list[tuple[str, np.ndarray]] = []
    for (layer, module), pair in sorted(pairs.items(), key=lambda item: (item[0][0], item[0][1])):
        name = _check_pair(layer, module, pair, base, peft_dir)
        a, b = pair["A"], pair["B"]
        rank = a.shape[0]
        if config.get("use_rslora"):  # peft: alpha / sqrt(r); llama.cpp: alpha / r
            b = b * math.sqrt(rank)
        if module == "q_proj":
            b = _permute_rows(b, base.heads)
        elif module == "k_proj":
            b = _permute_rows(b, base.kv_heads)
        tensors += [(f"{name}.lora_a", a), (f"{name}.lora_b", b)]
    with atomic_target(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch=base.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(peft_dir.resolve().name)
        for tensor_name, data in tensors:
            writer.add_tensor(tensor_name, np.ascontiguousarray(data, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    logger.info(
        "exported %s as a llama.cpp LoRA adapter: %d modules, %s",
        peft_dir,
        len(pairs),
        out_path,
        extra={"modules": len(pairs), "bytes": out_path.stat().st_size},
    )
    return out_path


__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "LLAMA_MODULES", "export_llamacpp_lora"]
