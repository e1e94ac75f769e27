"""The learned router's model file: versioned JSON, written atomically, data only.

A model file is untrusted input when loaded: every field is checked for type, size and
finiteness, and anything unexpected is a :class:`federation.errors.ConfigError` that says
what is wrong. Example (abridged)::

    {"format": "fedrag-learned-router", "version": 2, "feature_set": "card-sims-v1",
     "feature_names": ["max_centroid_sim", ...], "model": "share", "intercept": 0.0,
     "weights": [...], "feature_mean": [...], "feature_std": [...], "silo_names": ["a", "b"],
     "silo_bias": [0.3, -0.2], "selection": "coverage", "threshold": 0.1, "coverage": 0.91,
     "training": {"rows": 1800}, "calibration": {"target_recall": 0.95, "recall": 0.953}}

Version 1 files (before ``model``, ``selection``, ``coverage`` and ``calibration``) hold a
relevance model with threshold selection and are still read as such.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from federation.errors import ConfigError
from router.features import FEATURE_NAMES, FEATURE_SET

logger = logging.getLogger(__name__)

FORMAT = "fedrag-learned-router"
VERSION = 2
READABLE_VERSIONS = (1, 2)
ModelKind = Literal["relevance", "share"]
Selection = Literal["threshold", "coverage"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
SELECTIONS: tuple[str, ...] = get_args(Selection)
MAX_CALIBRATION_FIELDS = 32
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_SILOS = 100_000


@dataclass(frozen=True)
class ModelParams:
    """The parameters a model file holds (see :class:`router.learned.LearnedRouter`)."""

    intercept: float
    weights: tuple[float, ...]
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    silo_names: tuple[str, ...]
    silo_bias: tuple[float, ...]
    threshold: float
    training: dict[str, int]
    model: ModelKind = "relevance"
    selection: Selection = "threshold"
    coverage: float = 0.95
    calibration: dict[str, float] = field(default_factory=dict)


def save_model(path: Path, params: ModelParams) -> None:
    """Write ``params`` to ``path`` as JSON; readers never see half a file.

    Args:
        path: destination; its directory must exist.
        params: the model to write.

    Raises:
        ValueError: when a parameter is not finite (nothing is written).
    """
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "feature_set": FEATURE_SET,
        "feature_names": list(FEATURE_NAMES),
        "model": params.model,
        "intercept": params.intercept,
        "weights": list(params.weights),
        "feature_mean": list(params.feature_mean),
        "feature_std": list(params.feature_std),
        "silo_names": list(params.silo_names),
        "silo_bias": list(params.silo_bias),
        "selection": params.selection,
        "threshold": params.threshold,
        "coverage": params.coverage,
        "training": dict(params.training),
        "calibration": dict(params.calibration),
    }
    raw = (json.dumps(payload, indent=1, allow_nan=False) + "\n").encode()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("saved router model", extra={"path": str(path), "silos": len(params.silo_names)})


def load_model(path: Path) -> ModelParams:
    """Read and validate a model file.

    Args:
        path: a file written by :func:`save_model`.

    Returns:
        The validated parameters.

    Raises:
        ConfigError: when the file is missing, unreadable, not JSON, not a router model,
            from another format version or feature set, or holds invalid values.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"router model {path} not found (train one with `fedrag router train`)") from exc
    except OSError as exc:
        raise ConfigError(f"router model {path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"router model {path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"router model {path}: not a JSON model file ({exc})") from exc
    try:
        params = _parse(data)
    except ValueError as exc:
        raise ConfigError(f"router model {path}: {exc}") from exc
    logger.info("loaded router model", extra={"path": str(path), "silos": len(params.silo_names)})
    return params


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _parse(data: object) -> ModelParams:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    if data.get("format") != FORMAT:
        raise ValueError(f"not a learned router model (format {data.get('format')!r}, expected {FORMAT!r})")
    version = data.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise ValueError(
            f"unsupported model version {version!r} (this build reads versions {readable}); "
            "retrain it with `fedrag router train`"
        )
    if data.get("feature_set") != FEATURE_SET or data.get("feature_names") != list(FEATURE_NAMES):
        found = data.get("feature_set")
        raise ValueError(f"model was trained on features {found!r}, this build computes {FEATURE_SET!r}; retrain it")
    n = len(FEATURE_NAMES)
    names = data.get("silo_names")
    if not isinstance(names, list) or len(names) > MAX_SILOS or not all(isinstance(s, str) and s for s in names):
        raise ValueError("silo_names must be a list of non-empty strings")
    if len(set(names)) != len(names):
        raise ValueError("silo_names must be unique")
    std = _floats(data, "feature_std", n)
    if any(v <= 0 for v in std):
        raise ValueError("feature_std must be positive")
    threshold = _float(data.get("threshold"), "threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    training = data.get("training", {})
    if not isinstance(training, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in training.items()
    ):
        raise ValueError("training must be an object of integer counts")
    model: ModelKind = "relevance"
    selection: Selection = "threshold"
    coverage, calibration = 0.95, {}
    if version != 1:  # version 1 predates the share model: a relevance model with threshold selection
        model = _model_kind(data.get("model"))
        selection = _selection(data.get("selection"))
        coverage = _float(data.get("coverage"), "coverage")
        if not 0.0 < coverage <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        if selection == "coverage" and model != "share":
            raise ValueError("coverage selection needs a share model")
        calibration = _calibration(data.get("calibration", {}))
    return ModelParams(
        intercept=_float(data.get("intercept"), "intercept"),
        weights=_floats(data, "weights", n),
        feature_mean=_floats(data, "feature_mean", n),
        feature_std=std,
        silo_names=tuple(names),
        silo_bias=_floats(data, "silo_bias", len(names)),
        threshold=threshold,
        training=training,
        model=model,
        selection=selection,
        coverage=coverage,
        calibration=calibration,
    )


def _model_kind(value: object) -> ModelKind:
    if value == "relevance":
        return "relevance"
    if value == "share":
        return "share"
    raise ValueError(f"model must be one of {', '.join(MODEL_KINDS)}, got {value!r}")


def _selection(value: object) -> Selection:
    if value == "threshold":
        return "threshold"
    if value == "coverage":
        return "coverage"
    raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {value!r}")


def _calibration(value: object) -> dict[str, float]:
    if not isinstance(value, dict) or len(value) > MAX_CALIBRATION_FIELDS:
        raise ValueError("calibration must be an object of numbers")
    return {str(k): _float(v, f"calibration.{k}") for k, v in value.items()}


def _float(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field} must be a finite number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{field} must be a finite number")
    return number


def _floats(data: dict[str, Any], field: str, length: int) -> tuple[float, ...]:
    values = data.get(field)
    if not isinstance(values, list) or len(values) != length:
        raise ValueError(f"{field} must be a list of {length} numbers")
    return tuple(_float(v, f"{field}[{i}]") for i, v in enumerate(values))
