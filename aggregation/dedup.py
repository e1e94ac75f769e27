"""Near-duplicate removal across silos.

Two silos often hold the same text (a guideline copied into two hospitals' wikis, the
same README vendored twice). Showing it twice wastes the model's context and overstates
the evidence. Similarity is the Jaccard index of word 5-shingles of the lower-cased,
punctuation-stripped text; when either text is shorter than five words, the two compare
as sets of words.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

from aggregation.validation import Passage

__all__ = ["deduplicate", "jaccard", "shingles"]

SHINGLE_WORDS = 5
_PUNCTUATION = re.compile(r"[^\w\s]+")

Shingle = tuple[str, ...]


def _words(text: str) -> list[str]:
    return _PUNCTUATION.sub("", text.lower()).split()


def _grams(words: list[str], size: int) -> frozenset[Shingle]:
    return frozenset(zip(*(words[i:] for i in range(size)), strict=False))


def shingles(text: str, size: int = SHINGLE_WORDS) -> frozenset[Shingle]:
    """The ``size``-word shingles of ``text``, or its words (as 1-tuples) when it is shorter.

    Args:
        text: Any text; it is lower-cased and stripped of punctuation first.
        size: Words per shingle.

    Returns:
        The set of shingles, each a tuple of words.
    """
    words = _words(text)
    return _grams(words, size if len(words) >= size else 1)


def jaccard(a: frozenset[Shingle], b: frozenset[Shingle]) -> float:
    """Jaccard index ``|a & b| / |a | b|``; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


class _Fingerprint:
    """A text's shingles, with the prefix that filters out most dissimilar pairs cheaply.

    Prefix filtering (Chaudhuri et al., ICDE 2006): order every set the same way; two sets
    with Jaccard index at least ``t`` share an element among the first
    ``|A| - ceil(t * |A|) + 1`` elements of each.
    """

    def __init__(self, text: str, threshold: float) -> None:
        self._words = _words(text)
        self.short = len(self._words) < SHINGLE_WORDS
        self.grams = _grams(self._words, 1 if self.short else SHINGLE_WORDS)
        keep = len(self.grams) - math.ceil(threshold * len(self.grams) - 1e-9) + 1
        self.prefix = frozenset(sorted(self.grams)[:keep])

    @functools.cached_property
    def word_set(self) -> frozenset[Shingle]:
        return self.grams if self.short else _grams(self._words, 1)

    def similar(self, other: _Fingerprint, threshold: float) -> bool:
        """Whether the Jaccard index with ``other`` reaches ``threshold``."""
        if self.short or other.short:
            return jaccard(self.word_set, other.word_set) >= threshold
        small, large = sorted((len(self.grams), len(other.grams)))
        if small < threshold * large - 1e-9 or self.prefix.isdisjoint(other.prefix):
            return False
        return jaccard(self.grams, other.grams) >= threshold


def deduplicate(passages: Sequence[Passage], *, threshold: float = 0.85) -> tuple[list[Passage], int]:
    """Drop passages that nearly repeat an earlier one.

    ``passages`` should be best first (a merger's output): a passage is dropped when its
    similarity to *any* earlier passage is at least ``threshold``, so each group of near
    copies keeps its first, best-ranked member, and a chain of near copies collapses onto
    its head. The dropped set only grows as ``threshold`` falls. Passages of one silo are
    compared too: a silo that returns the same text under two chunk ids gets one slot.
    Cost is O(n^2) set comparisons, fine for the few hundred passages of one question.

    Args:
        passages: Candidate passages, best first.
        threshold: Similarity at or above which two passages are duplicates, in (0, 1].

    Returns:
        The kept passages in their original order, and how many were removed.

    Raises:
        ValueError: ``threshold`` is not in (0, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    prints = [_Fingerprint(p.text, threshold) for p in passages]
    kept: list[Passage] = []
    for j, passage in enumerate(passages):
        if not any(prints[i].similar(prints[j], threshold) for i in range(j)):
            kept.append(passage)
    return kept, len(passages) - len(kept)
