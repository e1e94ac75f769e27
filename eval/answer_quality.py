"""Quality of free-form answers, from a run's ``answer:<format>`` rows (see :mod:`eval.runner`).

Per suite, configuration and answer format (``free``: the old prompt and sampling;
``structured``: the gateway's new default), each figure with a 95% bootstrap interval:

* well-formed rate — the reply had the asked form (complete JSON / an ``Answer:``), over the
  answers the LLM generated (the gateway's own abstentions call no LLM and are left out);
* degenerate rate — :func:`is_degenerate`, over the same answers;
* citation rate — answers citing at least one source (the model's own citations, not those
  the gateway added), over answerable questions for which sources were retrieved;
* gold-citation rate — answers citing a gold document, over answerable questions whose gold
  document was among the sources;
* supported-claim rate — claims a cited source supports, pooled over the answers to
  answerable questions (interval: answers resampled);
* abstention precision and recall (:mod:`eval.abstention`) over every answered question;
* generate latency — mean milliseconds of the LLM step.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from eval.abstention import MIN_PRECISION, abstains, calibrate_threshold, calibration_sample
from eval.metrics import bootstrap_ratio_ci, interval
from gateway.loop_guard import find_loop

__all__ = ["is_degenerate", "summarise_answers", "summarise_calibration"]

Row = Mapping[str, Any]


def is_degenerate(answer: str, finish_reason: str, loop_detected: bool) -> bool:
    """Whether an answer is degenerate: a loop (caught by the guard, or found in the text), empty, or cut by length."""
    return loop_detected or finish_reason == "length" or not answer.strip() or find_loop(answer) is not None


def _flag(rows: Sequence[Row], test: Any) -> dict[str, float] | None:
    return interval([1.0 if test(row) else 0.0 for row in rows])


def _supported(rows: Sequence[Row]) -> dict[str, float] | None:
    claims = [row.get("claims_supported") or [] for row in rows]
    if not any(claims):
        return None
    good, total = [float(sum(c)) for c in claims], [float(len(c)) for c in claims]
    share, low, high = bootstrap_ratio_ci(good, total)
    return {"mean": share, "low": low, "high": high, "n": int(sum(total))}


def summarise_answers(rows: Sequence[Row]) -> dict[str, Any]:
    """The figures of one (suite, configuration, format) group of answer rows (see the module docstring)."""
    answered = [row for row in rows if "error" not in row]
    generated = [row for row in answered if row.get("generated")]
    answerable = [row for row in answered if row["answerable"]]
    with_sources = [row for row in answerable if row["sources"]]
    gold_offered = [row for row in with_sources if set(row["gold"]) & set(row["sources"])]
    abstaining = [row for row in answered if abstains(row["answer"], row["abstained"])]
    unanswerable = [row for row in answered if not row["answerable"]]
    generate_ms = [float(row["timings_ms"]["generate"]) for row in generated if "generate" in row["timings_ms"]]
    return {
        "questions": len(rows),
        "answerable": sum(1 for row in rows if row["answerable"]),
        "unanswerable": sum(1 for row in rows if not row["answerable"]),
        "errors": len(rows) - len(answered),
        "generated": len(generated),
        "gateway_abstained": sum(1 for row in answered if row["abstained"]),
        "well_formed": _flag(generated, lambda row: row["well_formed"]),
        "degenerate": _flag(
            generated, lambda row: is_degenerate(row["answer"], row["finish_reason"], row["loop_detected"])
        ),
        "citation_rate": _flag(with_sources, lambda row: row["cited"]),
        "gold_citation_rate": _flag(gold_offered, lambda row: set(row["cited_docs"]) & set(row["gold"])),
        "supported_claims": _supported([row for row in answerable if row.get("generated")]),
        "grounded": _flag([row for row in answerable if row.get("grounded") is not None], lambda row: row["grounded"]),
        "abstention_precision": _flag(abstaining, lambda row: not row["answerable"]),
        "abstention_recall": _flag(unanswerable, lambda row: abstains(row["answer"], row["abstained"])),
        "generate_ms": interval(generate_ms),
        "finish_reasons": dict(sorted(Counter(str(row["finish_reason"]) for row in answered).items())),
    }


def _distribution(scores: Sequence[float | None]) -> dict[str, Any]:
    kept = sorted(s for s in scores if s is not None)
    summary: dict[str, Any] = {"n": len(scores), "none": len(scores) - len(kept), "scores": [round(s, 4) for s in kept]}
    if kept:
        q = statistics.quantiles(kept, n=10, method="inclusive") if len(kept) > 1 else [kept[0]] * 9
        summary.update(min=kept[0], p10=q[0], median=statistics.median(kept), p90=q[-1], max=kept[-1])
    return summary


def summarise_calibration(rows: Sequence[Row], *, min_precision: float = MIN_PRECISION) -> dict[str, Any] | None:
    """The abstention threshold calibrated on one configuration's rows, with the score distributions.

    The same choice :class:`eval.runner.SuiteRun` made for the structured answers (it reads the
    same rows), plus the best-score distributions of the answerable and unanswerable calibration
    questions and, for comparison, of the evaluated ones. None when the rows hold no calibration.
    """
    answerable, unanswerable = calibration_sample(rows)
    if not unanswerable:
        return None
    choice = calibrate_threshold(answerable, unanswerable, min_precision=min_precision)
    evaluated = {row["id"]: row for row in rows if str(row["kind"]).startswith("answer:") and "best_score" in row}
    return {
        "threshold": choice.threshold,
        "rule": choice.rule,
        "min_precision": min_precision,
        "precision": choice.score.precision if choice.score else None,
        "recall": choice.score.recall if choice.score else None,
        "answerable": _distribution(answerable),
        "unanswerable": _distribution(unanswerable),
        "evaluated_answerable": _distribution([r["best_score"] for r in evaluated.values() if r["answerable"]]),
        "evaluated_unanswerable": _distribution([r["best_score"] for r in evaluated.values() if not r["answerable"]]),
    }
