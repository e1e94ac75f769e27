"""Helpers the loaders share: limit checks and seeded samples."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from federation.errors import ConfigError

__all__ = ["check_limit", "seeded_sample"]

_T = TypeVar("_T")


def check_limit(limit: int | None, what: str) -> None:
    """Refuse a negative limit (``0`` asks for nothing, ``None`` for everything)."""
    if limit is not None and limit < 0:
        raise ConfigError(f"{what}: the limit must be 0 or more, got {limit}")


def seeded_sample(items: Sequence[_T], limit: int | None, seed: int) -> list[_T]:
    """``limit`` items drawn with ``random.Random(seed)``, in their original order (all of them if fewer)."""
    if limit is None or limit >= len(items):
        return list(items)
    picked = random.Random(seed).sample(range(len(items)), limit)
    return [items[i] for i in sorted(picked)]
