"""Split a document's text into passages that fit the embedding model and the prompt.

Paragraphs (blank-line separated) are kept whole and packed greedily. A paragraph longer than
``max_chars`` is cut at sentence ends or line breaks, else between words, else (a single
word longer than a chunk) anywhere; each piece after the first repeats the previous piece's
tail, up to ``overlap_chars``, starting at a word. Every chunk, overlap included, is at most
``max_chars`` long; every chunk is stripped and non-empty; no text is lost.
"""

from __future__ import annotations

import re

__all__ = ["chunk_text"]

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# The end of a sentence: terminal punctuation, optional closing quotes or brackets, then a space.
_SENTENCE_END = re.compile(r"[.!?…。][\"'”’»)\]]*(?=\s)")
_PARAGRAPH_SEPARATOR = "\n\n"


def chunk_text(text: str, *, max_chars: int, overlap_chars: int) -> list[str]:
    """Split ``text`` into chunks of at most ``max_chars`` characters.

    Whole paragraphs are packed greedily, joined by a blank line. When a paragraph does not
    fit in a chunk of its own, it is split (together with the small paragraphs still waiting
    to be packed before it): preferably after the last sentence end or line break in the
    second half of the window, else at the last space, else hard at ``max_chars``. Each
    piece after the first repeats up to ``overlap_chars`` characters of the text before it,
    starting at a word boundary, within the ``max_chars`` limit. The last piece goes on
    packing the paragraphs that follow. The result depends only on the arguments.

    Args:
        text: The text to split (normalised text, though any string works).
        max_chars: Upper bound on every chunk's length, overlap included.
        overlap_chars: Characters of context repeated from the previous piece of a split
            paragraph; must be smaller than ``max_chars``.

    Returns:
        The chunks in text order; empty if ``text`` holds only whitespace.

    Raises:
        ValueError: If ``max_chars < 1`` or ``overlap_chars`` is not in ``[0, max_chars)``.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if not 0 <= overlap_chars < max_chars:
        raise ValueError(f"overlap_chars must be in [0, max_chars={max_chars}), got {overlap_chars}")
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n"))]
    chunks: list[str] = []
    pending = ""
    for paragraph in filter(None, paragraphs):
        joined = f"{pending}{_PARAGRAPH_SEPARATOR}{paragraph}" if pending else paragraph
        if len(joined) <= max_chars:
            pending = joined
        elif len(paragraph) <= max_chars:
            chunks.append(pending)
            pending = paragraph
        else:
            *done, pending = _split(joined, max_chars, overlap_chars)
            chunks.extend(done)
    if pending:
        chunks.append(pending)
    return chunks


def _split(text: str, max_chars: int, overlap_chars: int) -> list[str]:
    """Cut a stripped ``text`` longer than ``max_chars`` into overlapping pieces."""
    pieces: list[str] = []
    start = 0  # Where the current piece starts (its overlap included).
    new = 0  # Where the current piece's new text starts.
    while True:
        limit = start + max_chars
        if limit >= len(text):
            pieces.append(text[start:].strip())
            return pieces
        end = _cut(text, new, limit)
        pieces.append(text[start:end].strip())
        new = _skip_space(text, end)
        if new >= len(text):
            return pieces
        start = _overlap_start(text, previous_start=start, new=new, overlap_chars=overlap_chars)


def _cut(text: str, new: int, limit: int) -> int:
    """Return where a piece whose new text starts at ``new`` ends; ``new < limit < len(text)``."""
    half = new + (limit - new) // 2
    sentence = max(
        (m.end() for m in _SENTENCE_END.finditer(text, half, limit + 1) if m.end() <= limit),
        default=-1,
    )
    line_break = text.rfind("\n", half, limit + 1)
    best = max(sentence, line_break)
    if best > new:
        return best
    for end in range(limit, new, -1):
        if text[end].isspace():
            return end
    return limit


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


def _overlap_start(text: str, *, previous_start: int, new: int, overlap_chars: int) -> int:
    """Return where a piece starts: up to ``overlap_chars`` before ``new``, at the start of a word."""
    start = max(previous_start, new - overlap_chars)
    if start > 0 and not text[start - 1].isspace():
        while start < new and not text[start].isspace():
            start += 1  # Mid-word: move on to the next word.
    return _skip_space(text, start) if start < new else new
