"""Free-form answer metrics: degenerate answers, the per-format summary and its report table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval.answer_quality import is_degenerate, summarise_answers, summarise_calibration
from eval.report import write_report
from gateway.pipeline import ABSTAIN_ANSWER

pytestmark = pytest.mark.unit

LOOP = "The answer is: " + "the lens fiber cell is a type of cell that is part of the lens. " * 4


def test_loops_empty_answers_and_answers_cut_by_length_are_degenerate() -> None:
    assert is_degenerate(LOOP, "stop", loop_detected=False)  # the guard was off: found in the text
    assert is_degenerate("A short answer [1].", "repetition", loop_detected=True)
    assert is_degenerate("   ", "stop", loop_detected=False)
    assert is_degenerate("Skin fragility is a tendency of the skin to", "length", loop_detected=False)
    assert not is_degenerate("Skin fragility is a tendency of the skin to tear [1].", "stop", loop_detected=False)


def answer(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "suite": "medical",
        "config": "fed-all",
        "kind": "answer:structured",
        "id": "q",
        "answerable": True,
        "gold": ["G"],
        "answer": "Skin fragility is a tendency of the skin to tear [1].",
        "abstained": False,
        "cited": [1],
        "cited_docs": ["G"],
        "sources": ["G", "X"],
        "claims_supported": [True],
        "grounded": True,
        "generated": True,
        "well_formed": True,
        "finish_reason": "stop",
        "loop_detected": False,
        "best_score": 0.8,
        "timings_ms": {"generate": 2000.0},
    }
    row.update(fields)
    return row


ROWS = [
    answer(id="a1"),
    answer(id="a2", cited=[2], cited_docs=["X"], claims_supported=[False, True, True]),  # cites a distractor
    answer(id="a3", answer=LOOP, cited=[], cited_docs=[], claims_supported=[False] * 6, well_formed=False),
    answer(id="a4", sources=["X"], claims_supported=[False], cited=[], cited_docs=[]),  # gold not retrieved
    answer(id="u1", answerable=False, gold=["U"], answer=ABSTAIN_ANSWER, abstained=True, generated=False, cited=[]),
    answer(id="u2", answerable=False, gold=["U2"], answer="The sources do not mention it.", cited=[]),
    answer(id="u3", answerable=False, gold=["U3"], answer="It is a fin [1].", timings_ms={"generate": 4000.0}),
    answer(id="e", error="llm_timeout: late"),
]


def test_the_summary_counts_each_rate_over_its_own_questions() -> None:
    s = summarise_answers(ROWS)
    assert (s["questions"], s["answerable"], s["unanswerable"], s["errors"]) == (8, 5, 3, 1)
    assert s["generated"] == 6 and s["gateway_abstained"] == 1
    assert s["well_formed"]["mean"] == pytest.approx(5 / 6) and s["well_formed"]["n"] == 6
    assert s["degenerate"]["mean"] == pytest.approx(1 / 6)
    assert s["citation_rate"]["mean"] == pytest.approx(2 / 4)  # a1, a2 of the four answerable ones
    assert s["gold_citation_rate"]["mean"] == pytest.approx(1 / 3)  # a1 of a1-a3 (a4 had no gold source)
    assert s["supported_claims"]["mean"] == pytest.approx(3 / 11) and s["supported_claims"]["n"] == 11
    assert s["abstention_precision"]["mean"] == 1.0 and s["abstention_precision"]["n"] == 2
    assert s["abstention_recall"]["mean"] == pytest.approx(2 / 3)
    assert s["generate_ms"]["mean"] == pytest.approx((5 * 2000 + 4000) / 6)
    for key in ("well_formed", "degenerate", "citation_rate", "supported_claims", "abstention_recall", "generate_ms"):
        figure = s[key]
        assert figure["low"] <= figure["mean"] <= figure["high"]
    assert s["supported_claims"]["low"] < s["supported_claims"]["high"]  # resampled answers differ


def test_calibration_summary_gives_the_threshold_and_both_distributions() -> None:
    rows = [{"kind": "retrieval", "split": "calibration", "best_score": s} for s in (0.7, 0.8, 0.9)]
    rows += [{"kind": "calibration", "best_score": s} for s in (0.3, 0.5)]
    rows += [answer(id="a", best_score=0.75), answer(id="u", answerable=False, best_score=0.45)]
    c = summarise_calibration(rows)
    assert c is not None
    assert c["threshold"] == pytest.approx(0.6) and c["rule"] == "precision"
    assert c["answerable"]["scores"] == [0.7, 0.8, 0.9] and c["unanswerable"]["median"] == pytest.approx(0.4)
    assert c["evaluated_unanswerable"]["scores"] == [0.45]
    assert summarise_calibration(rows[:3]) is None


def test_the_report_puts_free_and_structured_side_by_side_with_the_threshold(tmp_path: Path) -> None:
    free = [
        {**row, "kind": "answer:free", "answer": LOOP, "finish_reason": "length", "well_formed": False}
        for row in ROWS[:4]
    ]
    calibration = [{**answer(id=f"c{i}"), "kind": "calibration", "best_score": 0.3 + i / 10} for i in range(2)]
    retrieval = [
        {**answer(id=f"r{i}"), "kind": "retrieval", "split": "calibration", "best_score": 0.8} for i in range(2)
    ]
    for row in retrieval:
        row.update(recall=1.0, ndcg=1.0, passages=[], silos_asked=["a"], silos_total=1)
    meta = {"options": {"k": 10, "llm_model": "m"}, "finished": "now", "llm": "llm", "suites": {}}
    results = write_report(tmp_path, [*ROWS, *free, *calibration, *retrieval], meta)
    figures = results["suites"]["medical"]["fed-all"]
    assert set(figures["free_form"]) == {"free", "structured"}
    assert figures["free_form"]["free"]["degenerate"]["mean"] == 1.0
    assert figures["abstention_calibration"]["threshold"] == pytest.approx(0.6)
    report = (tmp_path / "report.md").read_text()
    assert "| config | metric | free (before) | structured (after) |" in report
    assert "| fed-all | degenerate (loop, empty or cut by length) | 1.00 [1.00, 1.00] (4) | 0.17 [" in report
    assert "| fed-all | 0.6000 | precision |" in report
    assert json.loads((tmp_path / "results.json").read_text())["suites"]["medical"]["fed-all"]["free_form"]
    assert (tmp_path / "answer_quality.png").stat().st_size > 1000
