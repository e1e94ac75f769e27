"""Context packing: fit the merged passages into the model's context budget.

Passages are taken in order (best first) while they fit. The first one that does not fit
is cut at a word boundary when enough room is left to make that worthwhile, and packing
stops there: a later, worse passage never takes the place of a better one.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

from aggregation.validation import Passage

__all__ = ["MIN_TRUNCATION_TOKENS", "approx_token_count", "pack_context"]

MIN_TRUNCATION_TOKENS = 64
"""A passage that does not fit is cut only when at least this many tokens are left."""

_WORD_END = re.compile(r"\S+")


def approx_token_count(text: str) -> int:
    """Estimate the tokens of ``text`` without a tokenizer.

    This is an estimate, not a count: about four characters per token for English prose
    with BPE tokenizers, and at least one token per whitespace-separated word. It grows
    with every prefix of a text, which is what packing needs. Use the model's tokenizer
    when an exact count matters.

    Args:
        text: Any text.

    Returns:
        ``max(ceil(len(text) / 4), number of words)``.
    """
    if not text:
        return 0
    return max(math.ceil(len(text) / 4), len(text.split()))


def _cost(title: str, text: str, count_tokens: Callable[[str], int], overhead: int) -> int:
    return (max(0, count_tokens(title)) if title else 0) + max(0, count_tokens(text)) + overhead


def _truncate_to_fit(
    passage: Passage, room: int, count_tokens: Callable[[str], int], overhead: int
) -> tuple[Passage, int] | None:
    """The longest word-boundary prefix of the passage's text that fits in ``room`` tokens."""
    ends = [m.end() for m in _WORD_END.finditer(passage.text)]
    best: tuple[Passage, int] | None = None
    low, high = 1, len(ends)
    while low <= high:  # largest word count that fits, assuming the counter grows with prefixes
        middle = (low + high) // 2
        text = passage.text[: ends[middle - 1]]
        cost = _cost(passage.title, text, count_tokens, overhead)
        if cost <= room:
            best = (dataclasses.replace(passage, text=text), cost)
            low = middle + 1
        else:
            high = middle - 1
    return best


def pack_context(
    passages: Sequence[Passage],
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    per_passage_overhead: int = 16,
) -> tuple[list[Passage], int]:
    """Keep passages, in order, while they fit in ``budget_tokens``.

    A passage costs ``count_tokens(title) + count_tokens(text) + per_passage_overhead``
    (the overhead stands for the source number and separators the prompt adds). The first
    passage that does not fit is cut at a word boundary to fill the rest of the budget if
    at least :data:`MIN_TRUNCATION_TOKENS` tokens are left, otherwise dropped; either way
    every passage after it is dropped. The result never exceeds the budget.

    Args:
        passages: Passages, best first.
        budget_tokens: Tokens the passages may take in the prompt.
        count_tokens: The model's token counter, or :func:`approx_token_count`.
        per_passage_overhead: Tokens the prompt adds around each passage.

    Returns:
        The packed passages (the last one possibly cut short) and the tokens they use.

    Raises:
        ValueError: ``per_passage_overhead`` is negative.
    """
    if per_passage_overhead < 0:
        raise ValueError(f"per_passage_overhead must not be negative, got {per_passage_overhead}")
    packed: list[Passage] = []
    used = 0
    for passage in passages:
        room = budget_tokens - used
        cost = _cost(passage.title, passage.text, count_tokens, per_passage_overhead)
        if cost <= room:
            packed.append(passage)
            used += cost
            continue
        if room >= MIN_TRUNCATION_TOKENS:
            cut = _truncate_to_fit(passage, room, count_tokens, per_passage_overhead)
            if cut is not None:
                packed.append(cut[0])
                used += cut[1]
        break
    return packed, used
