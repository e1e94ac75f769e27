"""Build a router by name, as configured for a gateway."""

from __future__ import annotations

import logging
from pathlib import Path

from federation.errors import ConfigError
from router.base import Router
from router.learned import LearnedRouter
from router.strategies import AllRouter, CentroidRouter

logger = logging.getLogger(__name__)

ROUTER_NAMES: tuple[str, ...] = ("all", "centroid", "learned")


def make_router(
    name: str,
    *,
    threshold: float | None = None,
    top_m: int | None = None,
    model_path: Path | None = None,
    coverage: float | None = None,
    guard: bool = False,
) -> Router:
    """Create the router called ``name``.

    Options that do not apply to the chosen strategy are ignored (logged at debug
    level), so one gateway configuration can switch strategies by name alone.

    Args:
        name: ``"all"``, ``"centroid"`` or ``"learned"``.
        threshold: the centroid router's similarity threshold; for the learned router,
            threshold selection with this minimum score instead of the rule saved with
            the model. None keeps the default.
        top_m: the centroid router's maximum number of silos; None keeps the default.
        model_path: the learned router's model file (required for ``"learned"``).
        coverage: for the learned router (share model), coverage selection with this
            coverage instead of the rule saved with the model. None keeps the saved rule.
        guard: for the learned router, also ask the silo with the closest centroid
            (:meth:`LearnedRouter.route`).

    Returns:
        The router.

    Raises:
        ConfigError: for an unknown name (the message lists the choices), an invalid
            option value, both ``threshold`` and ``coverage`` for the learned router,
            coverage for a relevance model, a missing ``model_path`` or an unusable model file.
    """
    key = name.strip().lower()
    try:
        if key == "all":
            _ignored(key, threshold=threshold, top_m=top_m, model_path=model_path, coverage=coverage)
            return AllRouter()
        if key == "centroid":
            _ignored(key, model_path=model_path, coverage=coverage)
            return CentroidRouter(
                threshold=0.3 if threshold is None else threshold,
                top_m=3 if top_m is None else top_m,
            )
        if key == "learned":
            _ignored(key, top_m=top_m)
            if model_path is None:
                raise ConfigError("the learned router needs model_path (train one with `fedrag router train`)")
            if threshold is not None and coverage is not None:
                raise ConfigError("the learned router takes a threshold or a coverage, not both")
            router = LearnedRouter.load(Path(model_path)).with_guard(guard)
            if threshold is not None:
                return router.with_threshold(threshold)
            return router if coverage is None else router.with_coverage(coverage)
    except ValueError as exc:
        raise ConfigError(f"router {key!r}: {exc}") from exc
    raise ConfigError(f"unknown router {name!r}; choose one of: {', '.join(ROUTER_NAMES)}")


def _ignored(name: str, **options: object) -> None:
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        logger.debug("router options ignored", extra={"router": name, "options": given})
