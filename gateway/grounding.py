"""Grounding checks: is each claim of an answer supported by the source it cites?

The answer is split into claims (sentences). Each claim's citations are the ``[n]`` written
in it or, when it has none, the sources the reply as a whole cites. A claim is *supported*
when its embedding (the federation's own encoder) is close enough to one of its cited
passages: cosine similarity at least ``support_threshold``. A claim that cites nothing can
be given the source that supports it best, marked as added by the gateway, never as the
model's. The answer is *grounded* when the model cited at least one source and at least half
of its claims are supported.

Passages are compared as a whole and by sentence windows (the best of both), so a claim
that restates one sentence of a long passage is not diluted by the rest of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.prompting import find_citations

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n+")
_CITATION_MARK = re.compile(r"\s*[\[【]\s*\d{1,9}(?:\s*[,;\-–]\s*\d{1,9})*\s*[\]】]")
_MIN_CLAIM_CHARS = 12
_WINDOW_CHARS = 400


@dataclass(frozen=True)
class ClaimCheck:
    """One claim of an answer and what supports it.

    Attributes:
        text: the claim, without its citation marks.
        citations: the sources it cites (or was given by the gateway, when ``added``).
        supported: one of its sources supports it (similarity at least the threshold).
        support: the best similarity between the claim and its sources (0 when it has none).
        added: its citation was added by the gateway, not written by the model.
    """

    text: str
    citations: tuple[int, ...]
    supported: bool
    support: float
    added: bool = False


@dataclass(frozen=True)
class GroundingReport:
    """The grounding check of one answer.

    Attributes:
        claims: the answer's claims, checked.
        grounded: the model cited a source and at least half of the claims are supported.
        added_citations: sources the gateway attached to uncited claims.
    """

    claims: tuple[ClaimCheck, ...]
    grounded: bool
    added_citations: tuple[int, ...]

    @property
    def supported_fraction(self) -> float:
        """Share of claims that are supported (0 without claims)."""
        return sum(c.supported for c in self.claims) / len(self.claims) if self.claims else 0.0


def split_claims(answer: str, source_numbers: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """The answer's sentences with the valid ``[n]`` citations written in each.

    A citation written at the start of the next sentence (``... disease. [1] It ...``) stays
    with the sentence before it. Fragments shorter than a few words are joined to the claim
    before them.
    """
    claims: list[tuple[str, tuple[int, ...]]] = []
    for piece in _SENTENCE_END.split(answer):
        cited, _ = find_citations(piece, source_numbers)
        text = " ".join(_CITATION_MARK.sub("", piece).split())
        if claims and (len(text) < _MIN_CLAIM_CHARS or not any(ch.isalnum() for ch in text)):
            last_text, last_cited = claims[-1]
            claims[-1] = (f"{last_text} {text}".strip(), tuple(dict.fromkeys([*last_cited, *cited])))
        elif text or cited:
            claims.append((text, cited))
    return [(text, cited) for text, cited in claims if text]


def _windows(text: str) -> list[str]:
    """The passage, then its sentence windows of about ``_WINDOW_CHARS`` characters (if it is longer)."""
    windows = [text]
    if len(text) <= _WINDOW_CHARS:
        return windows
    current = ""
    for sentence in _SENTENCE_END.split(text):
        if current and len(current) + len(sentence) > _WINDOW_CHARS:
            windows.append(current)
            current = ""
        current = f"{current} {sentence}".strip()
    if current:
        windows.append(current)
    return windows


class GroundingChecker:
    """Checks answers against their sources with an embedding function.

    Args:
        encode: texts -> L2-normalised vectors (the federation's encoder).
        support_threshold: least cosine similarity of a claim and a passage for support.
        add_missing_citations: give uncited claims the source that supports them best.
    """

    def __init__(
        self,
        encode: Callable[[list[str]], np.ndarray],
        *,
        support_threshold: float = 0.5,
        add_missing_citations: bool = True,
    ) -> None:
        if not -1.0 <= support_threshold <= 1.0:
            raise ValueError("support_threshold must be in [-1, 1]")
        self._encode = encode
        self.support_threshold = support_threshold
        self.add_missing_citations = add_missing_citations

    def check(self, answer: str, sources: Mapping[int, str], cited: Sequence[int]) -> GroundingReport:
        """Check ``answer`` against ``sources`` (number -> passage text).

        Args:
            answer: the answer text, with ``[n]`` marks.
            sources: the passages of the prompt by number.
            cited: the sources the reply cites as a whole (inline and listed).
        """
        numbers = list(sources)
        claims = split_claims(answer, numbers)
        if not claims or not sources:
            return GroundingReport(claims=(), grounded=False, added_citations=())
        reply_cited = tuple(n for n in cited if n in sources)
        wanted = set(reply_cited) | {n for _, c in claims for n in c}
        if self.add_missing_citations and any(not c for _, c in claims) and not reply_cited:
            wanted = set(numbers)
        order = sorted(wanted)
        windows = [(n, w) for n in order for w in _windows(sources[n])]
        vectors = self._encode([text for text, _ in claims] + [w for _, w in windows])
        claim_vectors, window_vectors = vectors[: len(claims)], vectors[len(claims) :]
        best = {n: np.full(len(claims), -1.0) for n in order}
        if windows:
            similarity = claim_vectors @ window_vectors.T
            for column, (n, _) in enumerate(windows):
                best[n] = np.maximum(best[n], similarity[:, column])
        checks: list[ClaimCheck] = []
        added: dict[int, None] = {}
        for row, (text, inline) in enumerate(claims):
            own = inline or reply_cited
            if own:
                support = max(float(best[n][row]) for n in own)
                checks.append(ClaimCheck(text, own, support >= self.support_threshold, max(support, 0.0)))
                continue
            if self.add_missing_citations and best:
                number = max(best, key=lambda n: float(best[n][row]))
                support = float(best[number][row])
                if support >= self.support_threshold:
                    added[number] = None
                    checks.append(ClaimCheck(text, (number,), True, support, added=True))
                    continue
            checks.append(ClaimCheck(text, (), False, 0.0))
        model_cited = bool(reply_cited) or any(c.citations and not c.added for c in checks)
        supported = sum(c.supported for c in checks)
        grounded = model_cited and supported * 2 >= len(checks)
        return GroundingReport(claims=tuple(checks), grounded=grounded, added_citations=tuple(added))
