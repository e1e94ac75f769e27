"""Validation of silo replies: every reply is untrusted input until it passes here.

A reply that breaks the contract (answers as another silo, sends more hits than asked,
non-finite or out-of-range scores, scores out of order, duplicate chunk ids, values of
the wrong type) raises :class:`InvalidReply`: the gateway counts that silo as failed for
this question and answers from the others. Things a well-behaved silo may legitimately do
(withhold text, send large metadata) are handled without failing the reply.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.errors import UpstreamError
from federation.protocol import SearchHit, SearchResponse

__all__ = ["InvalidReply", "Passage", "ReplyLimits", "clean_text", "validate_reply"]

SCORE_TOLERANCE = 1e-3
"""Scores within this distance outside ``[-1, 1]`` are float error and are clamped."""

ORDER_SLACK = 1e-6
"""How much a score may exceed the one before it and still count as non-increasing."""

_KEEP_CONTROLS = frozenset("\n\t")
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


@dataclass(frozen=True)
class Passage:
    """One validated passage from one silo.

    Attributes:
        silo: The real silo name (what the answer *shows* is decided by provenance).
        chunk_id: The silo's id of the chunk, unique within the silo's reply.
        doc_id: The silo's id of the document the chunk belongs to.
        title: Cleaned title, on one line.
        text: Cleaned, non-empty passage text, at most ``ReplyLimits.max_text_chars``.
        score: The silo's score, finite, in ``[-1, 1]``.
        rank: 1-based rank within the silo's reply, counting validated passages only.
        metadata: JSON-compatible metadata (``{}`` when the silo sent too much).
    """

    silo: str
    chunk_id: str
    doc_id: str
    title: str
    text: str
    score: float
    rank: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.score) and -1.0 <= self.score <= 1.0):
            raise ValueError(f"score must be finite and in [-1, 1], got {self.score!r}")
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")

    @property
    def key(self) -> tuple[str, str]:
        """The passage's identity across the federation: ``(silo, chunk_id)``."""
        return (self.silo, self.chunk_id)


class InvalidReply(UpstreamError):
    """A silo's reply breaks the protocol; the silo counts as failed for this question.

    The detail says what was wrong and where; it never echoes passage text.
    """

    code = "invalid_reply"
    title = "Invalid silo reply"


@dataclass(frozen=True)
class ReplyLimits:
    """Size limits applied to every silo reply.

    Attributes:
        max_hits: Per-silo quota. A reply with more hits than the requested ``k`` (or
            this) is invalid, not truncated.
        max_text_chars: Passage text longer than this is cut (at a word boundary when
            one is near).
        max_title_chars: Titles longer than this are cut.
        max_metadata_bytes: Metadata whose JSON encoding is larger than this is replaced
            by ``{}``; the passage is kept.
    """

    max_hits: int = 50
    max_text_chars: int = 4000
    max_title_chars: int = 300
    max_metadata_bytes: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_hits", "max_text_chars", "max_title_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_metadata_bytes < 0:
            raise ValueError("max_metadata_bytes must not be negative")


def clean_text(text: str, *, single_line: bool = False) -> str:
    """Remove control, format and surrogate characters; keep newlines and tabs.

    Carriage returns and the Unicode line and paragraph separators become newlines, and
    with ``single_line`` every line break and tab becomes a space. Leading and trailing
    whitespace is stripped.

    Args:
        text: Untrusted text.
        single_line: Turn every line break and tab into a space.

    Returns:
        The cleaned text.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    # Every character of the dropped categories is non-printable, so text that is printable
    # apart from newlines and tabs (nearly all text) has nothing to drop: skip the per-character look-up.
    if not text.replace("\n", "").replace("\t", "").isprintable():
        drop = {
            ord(ch): None
            for ch in set(text)
            if not ch.isprintable() and ch not in _KEEP_CONTROLS and unicodedata.category(ch) in _DROP_CATEGORIES
        }
        if drop:
            text = text.translate(drop)
    if single_line:
        text = " ".join(text.split())
    return text.strip()


def _truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, at a word boundary if one is in the last fifth."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if not text[limit].isspace():
        space = max(cut.rfind(" "), cut.rfind("\n"), cut.rfind("\t"))
        if space >= limit * 4 // 5:
            cut = cut[:space]
    return cut.rstrip()


def _clean_metadata(metadata: object, limit: int) -> dict[str, Any]:
    """A detached, JSON-only copy of ``metadata``, or ``{}`` when it is too large or not JSON."""
    if not isinstance(metadata, dict) or not metadata:
        return {}
    try:
        encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return {}
    if len(encoded.encode("utf-8", errors="replace")) > limit:
        return {}
    copy: dict[str, Any] = json.loads(encoded)
    return copy


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_hits(silo: str, hits: Sequence[SearchHit]) -> list[float]:
    """Check ids and scores of every hit; return the scores clamped to ``[-1, 1]``."""
    seen: set[str] = set()
    scores: list[float] = []
    previous = math.inf
    for position, hit in enumerate(hits, start=1):
        where = f"silo {silo!r} hit {position}"
        if not isinstance(hit, SearchHit):
            raise InvalidReply(f"{where} is not a search hit")
        if not isinstance(hit.chunk_id, str) or not hit.chunk_id or not hit.chunk_id.isprintable():
            raise InvalidReply(f"{where} has an empty or non-printable chunk id")
        if not isinstance(hit.doc_id, str) or not isinstance(hit.title, str):
            raise InvalidReply(f"{where} has a doc id or title that is not a string")
        if hit.text is not None and not isinstance(hit.text, str):
            raise InvalidReply(f"{where} has text that is not a string")
        if hit.chunk_id in seen:
            raise InvalidReply(f"{where} repeats chunk id {hit.chunk_id[:64]!r}")
        seen.add(hit.chunk_id)
        raw = hit.score
        if not _is_number(raw):
            raise InvalidReply(f"{where} has a score that is not a number")
        score = float(raw)
        if math.isnan(score):
            raise InvalidReply(f"{where} has a NaN score")
        if math.isinf(score):
            raise InvalidReply(f"{where} has an infinite score")
        if abs(score) > 1.0 + SCORE_TOLERANCE:
            raise InvalidReply(f"{where} has score {score:.6g}, outside [-1, 1]")
        if score > previous + ORDER_SLACK:
            raise InvalidReply(f"{where} scores higher ({score:.6g}) than the hit before it ({previous:.6g})")
        previous = score
        scores.append(min(1.0, max(-1.0, score)))
    return scores


def validate_reply(
    silo: str,
    reply: SearchResponse,
    *,
    k_requested: int,
    limits: ReplyLimits = ReplyLimits(),
) -> list[Passage]:
    """Check one silo's reply and turn its hits into :class:`Passage` objects.

    The whole reply is checked before anything is kept: the silo name, the number of hits
    (checked first, so that a huge reply is refused without looking at its hits), then
    each hit's ids and score. Text and titles are cleaned of control characters and cut
    to the limits; hits without text (the silo withheld it) are skipped, not invalid.

    Args:
        silo: The name of the silo the request went to.
        reply: Its reply, already parsed.
        k_requested: How many passages were asked for.
        limits: Size limits.

    Returns:
        The passages with text, best first, ranked from 1.

    Raises:
        InvalidReply: The reply answers as another silo; holds more hits than
            ``min(k_requested, limits.max_hits)``; has a NaN, infinite or out-of-range
            score (beyond ``SCORE_TOLERANCE``); scores that increase (beyond
            ``ORDER_SLACK``); a repeated, empty or non-printable chunk id; or a value
            of the wrong type.
        ValueError: ``k_requested`` is smaller than 1.
    """
    if k_requested < 1:
        raise ValueError(f"k_requested must be at least 1, got {k_requested}")
    if not isinstance(reply, SearchResponse):
        raise InvalidReply(f"silo {silo!r} sent something that is not a search response")
    if reply.silo != silo:
        shown = reply.silo[:64] if isinstance(reply.silo, str) else type(reply.silo).__name__
        raise InvalidReply(f"silo {silo!r} answered as {shown!r}")
    hits = reply.hits
    if not isinstance(hits, list | tuple):
        raise InvalidReply(f"silo {silo!r} sent hits that are not a list")
    quota = min(k_requested, limits.max_hits)
    if len(hits) > quota:
        raise InvalidReply(f"silo {silo!r} sent {len(hits)} hits; at most {quota} were allowed")
    scores = _check_hits(silo, hits)
    passages: list[Passage] = []
    for hit, score in zip(hits, scores, strict=True):
        if hit.text is None:
            continue
        # Cleaning only removes characters; cutting first bounds the work on huge texts.
        text = _truncate(clean_text(hit.text[: 4 * limits.max_text_chars + 1]), limits.max_text_chars)
        if not text:
            continue
        passages.append(
            Passage(
                silo=silo,
                chunk_id=hit.chunk_id,
                doc_id=clean_text(hit.doc_id, single_line=True),
                title=_truncate(clean_text(hit.title, single_line=True), limits.max_title_chars),
                text=text,
                score=score,
                rank=len(passages) + 1,
                metadata=_clean_metadata(hit.metadata, limits.max_metadata_bytes),
            )
        )
    return passages
