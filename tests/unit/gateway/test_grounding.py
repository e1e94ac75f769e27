"""Grounding checks with the federation's real encoder on hand-made supported and unsupported claims."""

from __future__ import annotations

import pytest

from gateway.grounding import GroundingChecker, split_claims

pytestmark = pytest.mark.unit

SOURCES = {
    1: "Hypertrophic cardiomyopathy. A cardiomyopathy characterized by thickening of the left ventricular wall, "
    "which is often asymmetric and can obstruct the outflow of blood from the heart.",
    2: "json.loads(s): Deserialize s (a str, bytes or bytearray instance containing a JSON document) to a Python "
    "object using this conversion table.",
    3: "Dilated cardiomyopathy. Dilated cardiomyopathy (DCM) is defined by the presence of left ventricular "
    "dilatation and left ventricular systolic dysfunction.",
}


@pytest.fixture(scope="module")
def checker(encoder) -> GroundingChecker:
    return GroundingChecker(encoder.encode, support_threshold=0.6)


@pytest.mark.parametrize(
    "claim",
    [
        "Hypertrophic cardiomyopathy is a thickening of the heart's left ventricle wall [1].",
        "Use json.loads to turn a JSON string into a Python dict [2].",
        "To parse JSON in Python, call json.loads on the string [2].",
        "Dilated cardiomyopathy means a dilated left ventricle that pumps poorly [3].",
    ],
)
def test_claims_that_restate_their_source_are_supported(checker: GroundingChecker, claim: str) -> None:
    report = checker.check(claim, SOURCES, [])
    assert [c.supported for c in report.claims] == [True]
    assert report.grounded


@pytest.mark.parametrize(
    "claim",
    [
        "Hypertrophic cardiomyopathy is caused by a virus transmitted by mosquitoes [1].",
        "The capital of France is Paris [1].",
        "Use the pickle module to read JSON files [2].",
        "Hypertrophic cardiomyopathy is the enlargement of the left ventricle with weak pumping [3].",
        "The sources are data, not instructions [1].",
    ],
)
def test_claims_their_cited_source_does_not_support_are_flagged(checker: GroundingChecker, claim: str) -> None:
    report = checker.check(claim, SOURCES, [])
    assert [c.supported for c in report.claims] == [False]
    assert not report.grounded


def test_an_answer_that_cites_nothing_is_not_grounded_and_gets_gateway_citations(checker: GroundingChecker) -> None:
    answer = "Hypertrophic cardiomyopathy thickens the left ventricle wall. The moon is made of cheese."
    report = checker.check(answer, SOURCES, [])
    assert not report.grounded  # the model cited nothing
    first, second = report.claims
    assert first.added and first.citations == (1,) and first.supported
    assert not second.supported and second.citations == ()
    assert report.added_citations == (1,)


def test_reply_level_citations_apply_to_claims_without_their_own(checker: GroundingChecker) -> None:
    report = checker.check("Use json.loads to turn a JSON string into a Python dict.", SOURCES, [2])
    assert report.claims[0].citations == (2,) and report.claims[0].supported and not report.claims[0].added
    assert report.grounded


def test_citations_that_are_not_sources_do_not_count(checker: GroundingChecker) -> None:
    report = checker.check("Use json.loads to parse JSON [9].", SOURCES, [9])
    assert not report.grounded


def test_without_sources_or_claims_nothing_is_grounded(checker: GroundingChecker) -> None:
    assert not checker.check("Anything [1].", {}, [1]).grounded
    assert checker.check("", SOURCES, [1]).claims == ()


def test_adding_citations_can_be_turned_off(encoder) -> None:
    checker = GroundingChecker(encoder.encode, add_missing_citations=False)
    report = checker.check("Hypertrophic cardiomyopathy thickens the left ventricle wall.", SOURCES, [])
    assert report.added_citations == () and not report.claims[0].supported


def test_split_claims_keeps_citations_with_their_sentence() -> None:
    claims = split_claims("It is a disease of the heart muscle [1][3]. It runs in families [2]. Ok. [4]", [1, 2, 3])
    assert claims == [("It is a disease of the heart muscle.", (1, 3)), ("It runs in families. Ok.", (2,))]


def test_threshold_out_of_range_is_refused(encoder) -> None:
    with pytest.raises(ValueError, match="support_threshold"):
        GroundingChecker(encoder.encode, support_threshold=2.0)
