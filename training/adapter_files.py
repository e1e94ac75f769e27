"""The trained adapter on disk: a peft directory built from the run's final global arrays."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from aggregation.adapters import LORA_A_SUFFIX, LORA_B_SUFFIX, PROMPT_KEY, pair_lora_names
from federation.config import TrainRunSettings
from training.local import AdapterModel
from training.silo_trainer import adapter_spec

ADAPTER_DIR = "adapter"
CLUSTERS_DIR = "prompt-clusters"
REPORT_FILE = "report.json"
_CLUSTER_PREFIX = "cluster."


def _numpy(arrays: ArrayRecord | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(arrays, ArrayRecord):
        return {name: array.numpy() for name, array in arrays.items()}
    return dict(arrays)


def _replace_dir(model: AdapterModel, target: Path) -> Path:
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def flora_adapter(stack: Mapping[str, np.ndarray], settings: TrainRunSettings, model_dir: Path) -> AdapterModel | None:
    """A plain LoRA equal to the FLoRA stack: rank the largest module rank (others zero-padded), scale 1."""
    pairs = pair_lora_names(list(stack)).values()
    rank = max((int(stack[p.a].shape[0]) for p in pairs), default=0)
    if rank == 0:
        return None
    spec = dataclasses.replace(adapter_spec(settings), method="lora", rank=rank, alpha=float(rank))
    model = AdapterModel(model_dir, spec)
    padded: dict[str, np.ndarray] = {}
    for pair in pairs:
        a, b = stack[pair.a], stack[pair.b]
        padded[pair.a] = np.pad(a, ((0, rank - a.shape[0]), (0, 0))).astype(np.float32)
        padded[pair.b] = np.pad(b, ((0, 0), (0, rank - b.shape[1]))).astype(np.float32)
    model.load(padded)
    return model


def save_adapter(
    output: Path, settings: TrainRunSettings, arrays: ArrayRecord | Mapping[str, np.ndarray], model_dir: Path
) -> Path | None:
    """Write the final global arrays as a peft directory ``OUT/adapter`` (None: nothing was learnt).

    FLoRA's stack becomes a plain LoRA of the stack's rank; prompt clustering writes the mean
    prompt as the adapter and every centroid under ``OUT/prompt-clusters/cluster-J``.
    """
    values = _numpy(arrays)
    output = Path(output)
    if settings.strategy == "flora":
        model = flora_adapter(values, settings, model_dir)
        return _replace_dir(model, output / ADAPTER_DIR) if model is not None else None
    model = AdapterModel(model_dir, adapter_spec(settings))
    known = set(model.array_names())
    model.load({n: v for n, v in values.items() if n in known})
    target = _replace_dir(model, output / ADAPTER_DIR)
    if settings.strategy == "prompt-cluster":
        for name, value in sorted(values.items()):
            if name.startswith(_CLUSTER_PREFIX) and name.endswith(PROMPT_KEY):
                index = name.removeprefix(_CLUSTER_PREFIX).split(".", 1)[0]
                model.load({PROMPT_KEY: value})
                _replace_dir(model, output / CLUSTERS_DIR / f"cluster-{index}")
    return target


def adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """The peft ``adapter_config.json`` of a saved adapter."""
    return dict(json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8")))


__all__ = [
    "ADAPTER_DIR",
    "CLUSTERS_DIR",
    "LORA_A_SUFFIX",
    "LORA_B_SUFFIX",
    "REPORT_FILE",
    "adapter_config",
    "flora_adapter",
    "save_adapter",
]
