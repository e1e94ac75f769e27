"""Abstention: does an answer say the sources do not contain it, and when should the gateway say so?

Some evaluation questions are *unanswerable*: their gold document was deliberately left out of
the federation (:func:`eval.suites.load_suite`), so the right answer is that the sources do not
contain it. Abstaining is the positive class:

* :func:`says_abstain` — the answer text says the sources do not contain (mention, provide ...)
  the answer; :func:`abstains` adds the gateway's own abstention (``AskResponse.abstained``).
* :func:`abstention_scores` — ``precision = |abstained ∩ unanswerable| / |abstained|`` and
  ``recall = |abstained ∩ unanswerable| / |unanswerable|``, over answerable and unanswerable
  questions together.
* :func:`calibrate_threshold` — the gateway abstains without asking the LLM when the best
  retrieved passage scores below ``abstain_below``; this picks that threshold from the best
  scores of answerable and unanswerable calibration questions.
* :func:`calibration_sample` — those scores, read from a run's per-question rows.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "MIN_PRECISION",
    "AbstentionScore",
    "ThresholdChoice",
    "abstains",
    "abstention_scores",
    "calibrate_threshold",
    "calibration_sample",
    "says_abstain",
]

MIN_PRECISION = 0.8
"""The least precision of abstaining that :func:`calibrate_threshold` aims for by default."""

_SUBJECT = r"(?:sources?|passages?|context|documents?|provided\s+(?:text|information))"
_NEGATION = r"(?:do(?:es)?\s+not|don[’']t|doesn[’']t|did\s+not|didn[’']t|cannot|can\s*not|fails?\s+to)"
_VERB = r"(?:contain|mention|provide|include|say|state|answer|cover|address|discuss|give|specify|describe)"
_ABSTENTION = re.compile(
    rf"\b{_SUBJECT}\b[^.!?;:\n]{{0,40}}?\b{_NEGATION}\s+(?:\w+\s+)?{_VERB}"
    rf"|\bnot\s+(?:mentioned|contained|provided|found|given|covered|stated)\s+in\s+(?:the\s+|any\s+of\s+the\s+)?"
    rf"{_SUBJECT}"
    rf"|\bno\s+passages\s+could\s+be\s+retrieved\b",
    re.IGNORECASE,
)


def says_abstain(text: str) -> bool:
    """Whether the answer says the sources do not contain the answer.

    Matches "the sources do not contain / mention / provide ... (the answer)", "the provided
    passages don't say", "not mentioned in the sources", and the gateway's own reply when no
    passage could be retrieved. A negation about something else ("the disease does not spread",
    or one in another clause: "uses only the sources; it does not provide more details") is not
    an abstention.
    """
    return bool(_ABSTENTION.search(text))


def abstains(answer: str, abstained: bool) -> bool:
    """An answer abstains when the gateway abstained or its text says the sources lack the answer."""
    return abstained or says_abstain(answer)


@dataclass(frozen=True)
class AbstentionScore:
    """Abstention as a classifier of unanswerable questions.

    Attributes:
        precision: share of the abstentions that were on unanswerable questions (None: none abstained).
        recall: share of the unanswerable questions that were abstained on (None: none unanswerable).
        abstained: how many answers abstained.
        unanswerable: how many questions were unanswerable.
        correct: abstentions on unanswerable questions.
    """

    precision: float | None
    recall: float | None
    abstained: int
    unanswerable: int
    correct: int

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when either is 0 or undefined)."""
        if not self.precision or not self.recall:
            return 0.0
        return 2 * self.precision * self.recall / (self.precision + self.recall)


def abstention_scores(abstained: Sequence[bool], unanswerable: Sequence[bool]) -> AbstentionScore:
    """Precision and recall of abstaining, one flag pair per question.

    Args:
        abstained: whether each answer abstained.
        unanswerable: whether each question's gold document was absent from the federation.

    Raises:
        ValueError: if the sequences differ in length.
    """
    if len(abstained) != len(unanswerable):
        raise ValueError(f"{len(abstained)} abstention flags for {len(unanswerable)} questions")
    correct = sum(1 for a, u in zip(abstained, unanswerable, strict=True) if a and u)
    n_abstained, n_unanswerable = sum(map(bool, abstained)), sum(map(bool, unanswerable))
    return AbstentionScore(
        precision=correct / n_abstained if n_abstained else None,
        recall=correct / n_unanswerable if n_unanswerable else None,
        abstained=n_abstained,
        unanswerable=n_unanswerable,
        correct=correct,
    )


@dataclass(frozen=True)
class ThresholdChoice:
    """The calibrated abstention threshold and how it does on the calibration questions.

    Attributes:
        threshold: abstain when the best passage's score is below this (None: no threshold helps).
        rule: ``precision`` (the highest recall with precision at least the target), ``f1`` (no
            threshold reached the target precision: the best F1), or ``none``.
        score: precision and recall of abstaining below ``threshold`` on the calibration questions.
        min_precision: the target precision.
    """

    threshold: float | None
    rule: Literal["precision", "f1", "none"]
    score: AbstentionScore | None
    min_precision: float


def _candidates(scores: Sequence[float]) -> list[float]:
    """Thresholds that separate the distinct scores: the lowest, every midpoint, just above the highest."""
    distinct = sorted(set(scores))
    if not distinct:
        return []
    middles = [(a + b) / 2 for a, b in itertools.pairwise(distinct)]
    return [distinct[0], *middles, math.nextafter(distinct[-1], math.inf)]


def calibrate_threshold(
    answerable: Sequence[float | None], unanswerable: Sequence[float | None], *, min_precision: float = MIN_PRECISION
) -> ThresholdChoice:
    """Choose ``abstain_below``: the highest recall of abstaining with precision at least ``min_precision``.

    A question abstains at threshold ``t`` when its best retrieval score is below ``t`` (a
    question with no score — nothing retrieved — abstains at every threshold). The candidate
    thresholds are the lowest score, the midpoints between consecutive distinct scores and a
    value just above the highest. Among the candidates whose precision reaches ``min_precision``
    the one with the highest recall wins (then the higher precision, then the lower threshold);
    if none reaches it, the one with the best F1 (same ties). With no useful threshold (no
    unanswerable questions, no answerable ones, or F1 0 everywhere) the threshold is None.

    Args:
        answerable: best scores of questions whose gold document is in the federation.
        unanswerable: best scores of questions whose gold document is not.
        min_precision: the least precision of abstaining.

    Raises:
        ValueError: if ``min_precision`` is outside ``[0, 1]``.
    """
    if not 0.0 <= min_precision <= 1.0:
        raise ValueError(f"min_precision must lie in [0, 1], got {min_precision}")
    if not answerable or not unanswerable:
        return ThresholdChoice(None, "none", None, min_precision)
    labels = [False] * len(answerable) + [True] * len(unanswerable)
    scores = [*answerable, *unanswerable]
    scored: list[tuple[float, AbstentionScore]] = []
    for t in _candidates([s for s in scores if s is not None]) or [0.0]:
        flags = [s is None or s < t for s in scores]
        scored.append((t, abstention_scores(flags, labels)))

    def rank(item: tuple[float, AbstentionScore], key: float) -> tuple[float, float, float]:
        t, s = item
        return (key, s.precision or 0.0, -t)

    reaching = [item for item in scored if item[1].precision is not None and item[1].precision >= min_precision]
    reaching = [item for item in reaching if item[1].correct > 0]
    if reaching:
        t, score = max(reaching, key=lambda item: rank(item, item[1].recall or 0.0))
        return ThresholdChoice(t, "precision", score, min_precision)
    t, score = max(scored, key=lambda item: rank(item, item[1].f1))
    if score.f1 == 0.0:
        return ThresholdChoice(None, "none", None, min_precision)
    return ThresholdChoice(t, "f1", score, min_precision)


def calibration_sample(rows: Iterable[Mapping[str, Any]]) -> tuple[list[float | None], list[float | None]]:
    """Best scores of the calibration questions in one configuration's rows: (answerable, unanswerable).

    Answerable: retrieval rows of questions held out from the answered ones (``split`` is
    ``calibration``); unanswerable: ``calibration`` rows (gold document left out of the federation).
    """
    answerable: list[float | None] = []
    unanswerable: list[float | None] = []
    for row in rows:
        if row["kind"] == "retrieval" and row.get("split") == "calibration" and "best_score" in row:
            answerable.append(row["best_score"])
        elif row["kind"] == "calibration" and "error" not in row:
            unanswerable.append(row.get("best_score"))
    return answerable, unanswerable
