"""Provenance: which silo the answer shows for each numbered source.

A federation may allow its silos' names to be shown, or not. When it does not, each silo
is replaced by a pseudonym such as ``source-silo-K``: the same silo gets the same
pseudonym within one answer (so a reader sees that sources 1 and 3 come from one place),
but the letters are drawn afresh for every answer, so a pseudonym says nothing about which
silo it stands for and cannot be linked across answers.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import count, product

from aggregation.validation import Passage

__all__ = ["SourceRef", "assign_sources"]

_POOL_MIN = 26


@dataclass(frozen=True)
class SourceRef:
    """What the answer shows for one passage.

    Attributes:
        number: 1-based source number, as cited in the prompt and answer (``[n]``).
        silo_label: The silo's real name, or a per-answer pseudonym.
        passage: The passage (its ``silo`` field stays the real name: show ``silo_label``).
    """

    number: int
    silo_label: str
    passage: Passage


def _codes(alphabet: str) -> Iterator[str]:
    """``A, B, ..., Z, AA, AB, ...`` over ``alphabet``."""
    for length in count(1):
        for letters in product(alphabet, repeat=length):
            yield "".join(letters)


# Label families, tried in order. The second uses no character a federation name may
# contain (``[A-Za-z0-9_.-]``), so it is safe for any such name.
_FAMILIES: tuple[Callable[[str], str], ...] = (
    lambda code: f"source-silo-{code}",
    lambda code: f"#{code}",
)
_ALPHABETS = (string.ascii_uppercase, "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ")


def _safe_pool(silos: Sequence[str], size: int) -> list[str]:
    """At least ``size`` labels that contain no silo name (case-insensitively)."""
    names = [s.casefold() for s in silos if s]
    pool: list[str] = []
    for family, alphabet in zip(_FAMILIES, _ALPHABETS, strict=True):
        pool = []
        codes = _codes(alphabet)
        for _ in range(4 * size + 64):
            label = family(next(codes))
            if not any(name in label.casefold() for name in names):
                pool.append(label)
                if len(pool) == size:
                    return pool
    # Only names outside the federation's name pattern get here; keep distinct labels.
    codes = _codes(_ALPHABETS[-1])
    return [_FAMILIES[-1](next(codes)) for _ in range(size)]


def assign_sources(
    passages: Sequence[Passage],
    *,
    show_silo_names: bool,
    rng: random.Random | None = None,
) -> list[SourceRef]:
    """Number the passages and label their silos for one answer.

    Args:
        passages: The passages of the answer, in prompt order.
        show_silo_names: Show real silo names (the federation allows it); otherwise each
            silo gets a pseudonym that contains no silo name of this answer.
        rng: The per-answer randomness for pseudonyms; a system-seeded generator when
            omitted. Pass a seeded one only in tests.

    Returns:
        One :class:`SourceRef` per passage, numbered from 1 in the given order.
    """
    silos = list(dict.fromkeys(p.silo for p in passages))
    if show_silo_names:
        labels = {silo: silo for silo in silos}
    else:
        generator = rng if rng is not None else random.SystemRandom()
        pool = _safe_pool(silos, max(_POOL_MIN, len(silos)))
        labels = dict(zip(silos, generator.sample(pool, len(silos)), strict=True))
    return [SourceRef(number=i, silo_label=labels[p.silo], passage=p) for i, p in enumerate(passages, start=1)]
