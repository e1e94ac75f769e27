"""Abstention: the answer text that abstains, precision and recall, and the calibrated threshold."""

from __future__ import annotations

import pytest

from eval.abstention import abstains, abstention_scores, calibrate_threshold, calibration_sample, says_abstain
from gateway.pipeline import ABSTAIN_ANSWER

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text",
    [
        ABSTAIN_ANSWER,
        "The sources do not contain the answer.",
        "The provided sources do not mention pectoral fin mesenchyme.",
        "The passages don't provide any information about this term.",
        "Source [2] does not say what the syndrome is.",
        "This is not mentioned in the sources.",
        "The context does not directly address the question.",
        "No passages could be retrieved from the federation for this question (mondo: timeout).",
    ],
)
def test_answers_that_say_the_sources_lack_the_answer_abstain(text: str) -> None:
    assert says_abstain(text)
    assert abstains(text, abstained=False)


@pytest.mark.parametrize(
    "text",
    [
        "Skin fragility is a tendency of the skin to tear easily [1].",
        "The disease does not contain a genetic component according to [1].",  # a negation about the disease
        "The source is [1] (uberon) dorsal fin middle radial cartilage 2.",
        "Python does not provide a switch statement; use if/elif [2].",
        # a reply of the embedded model (make eval, medical): the negation is in another clause
        "This answer uses only the numbered sources, not instructions; it does not provide any additional details.",
        "",
    ],
)
def test_answers_that_answer_do_not_abstain(text: str) -> None:
    assert not says_abstain(text)
    assert not abstains(text, abstained=False)


def test_the_gateways_own_abstention_counts_whatever_the_text() -> None:
    assert abstains("anything", abstained=True)


def test_abstention_precision_and_recall_over_answerable_and_unanswerable_questions() -> None:
    #             answerable: abstained once wrongly   unanswerable: 2 of 3 abstained
    abstained = [False, True, False, True, True, False]
    unanswerable = [False, False, False, True, True, True]
    score = abstention_scores(abstained, unanswerable)
    assert score.precision == pytest.approx(2 / 3)
    assert score.recall == pytest.approx(2 / 3)
    assert (score.abstained, score.unanswerable, score.correct) == (3, 3, 2)
    assert score.f1 == pytest.approx(2 / 3)


def test_precision_is_undefined_without_abstentions_and_recall_without_unanswerable_questions() -> None:
    none_abstained = abstention_scores([False, False], [True, False])
    assert none_abstained.precision is None and none_abstained.recall == 0.0 and none_abstained.f1 == 0.0
    all_answerable = abstention_scores([True, False], [False, False])
    assert all_answerable.recall is None and all_answerable.precision == 0.0
    with pytest.raises(ValueError, match="2 abstention flags for 1"):
        abstention_scores([True, False], [True])


def test_a_clean_gap_is_split_in_the_middle_with_full_precision_and_recall() -> None:
    choice = calibrate_threshold([0.7, 0.75, 0.9], [0.3, 0.4, 0.5])
    assert choice.rule == "precision"
    assert choice.threshold == pytest.approx(0.6)  # midway between 0.5 and 0.7
    assert choice.score is not None and choice.score.precision == 1.0 and choice.score.recall == 1.0


def test_the_highest_recall_wins_among_thresholds_that_keep_precision_at_least_0_8() -> None:
    # Sorted scores: u.30 u.40 u.50 u.52 a.55 u.58 a.70 a.80 a.90
    answerable = [0.55, 0.70, 0.80, 0.90]
    unanswerable = [0.30, 0.40, 0.50, 0.52, 0.58]
    choice = calibrate_threshold(answerable, unanswerable)
    # Below 0.535: 4 of 5 unanswerable, no answerable (P 1, R 0.8). Below 0.64: 5 of 5 but one
    # answerable (P 5/6 = 0.83 >= 0.8, R 1): the higher recall wins.
    assert choice.threshold == pytest.approx(0.64)
    assert choice.score is not None
    assert choice.score.precision == pytest.approx(5 / 6) and choice.score.recall == 1.0
    strict = calibrate_threshold(answerable, unanswerable, min_precision=0.9)
    assert strict.threshold == pytest.approx(0.535) and strict.score is not None and strict.score.recall == 0.8


def test_without_a_threshold_reaching_the_precision_the_best_f1_is_chosen() -> None:
    answerable = [0.3, 0.5, 0.7]
    unanswerable = [0.35, 0.55, 0.65]  # interleaved: no threshold reaches 0.8 precision
    choice = calibrate_threshold(answerable, unanswerable)
    assert choice.rule == "f1"
    assert choice.score is not None and choice.score.precision is not None and choice.score.precision < 0.8
    candidates = [0.3, 0.325, 0.425, 0.525, 0.6, 0.675, 0.70001]
    best = max(
        abstention_scores([s < t for s in answerable + unanswerable], [False] * 3 + [True] * 3).f1 for t in candidates
    )
    assert choice.score.f1 == pytest.approx(best)


def test_no_threshold_without_both_kinds_of_question() -> None:
    assert calibrate_threshold([0.5, 0.6], []).threshold is None
    assert calibrate_threshold([], [0.5]).rule == "none"


def test_a_question_with_nothing_retrieved_abstains_at_every_threshold() -> None:
    choice = calibrate_threshold([0.7, 0.8], [None, 0.4])
    assert choice.threshold == pytest.approx(0.55)
    assert choice.score is not None and choice.score.recall == 1.0


def test_calibration_reads_held_out_retrieval_rows_and_calibration_rows_only() -> None:
    rows = [
        {"kind": "retrieval", "split": "calibration", "best_score": 0.8},
        {"kind": "retrieval", "split": "answer", "best_score": 0.9},  # answered: not calibration
        {"kind": "retrieval", "best_score": 0.7},  # a row of a run before the split existed
        {"kind": "calibration", "best_score": 0.4},
        {"kind": "calibration", "best_score": None},
        {"kind": "calibration", "error": "timeout"},
        {"kind": "answer:structured", "best_score": 0.2},
    ]
    assert calibration_sample(rows) == ([0.8], [0.4, None])
