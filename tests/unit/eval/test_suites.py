"""Suites: unanswerable questions are about documents no silo holds, and leave the rest of a seed as it was."""

from __future__ import annotations

import pytest

from eval.suites import load_suite

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("suite", ["medical", "code"])
def test_unanswerable_questions_have_gold_documents_outside_the_federation(suite: str) -> None:
    limits = {"retrieval_limit": 8, "mc_limit": 0, "code_limit": 0, "docs_per_corpus": 40, "seed": 3}
    before = load_suite(suite, **limits)
    data = load_suite(suite, **limits, abstain_limit=6, calibration_limit=10)
    # the answerable questions and the documents of the seed are those of a run without abstention:
    # federations built before are reused (their manifests digest the same documents)
    assert data.retrieval == before.retrieval
    assert [d.doc_id for d in data.documents] == [d.doc_id for d in before.documents]
    assert before.unanswerable == before.calibration == []

    assert len(data.unanswerable) == 6 and len(data.calibration) == 10
    held = {d.doc_id for d in data.documents}
    titles = {d.title.casefold() for d in data.documents}
    unanswerable = data.unanswerable + data.calibration
    assert len({q.id for q in unanswerable}) == 16  # the evaluated and the calibration ones are disjoint
    assert not {q.id for q in unanswerable} & {q.id for q in data.retrieval}
    for q in unanswerable:
        assert not q.gold_doc_ids & held  # in no silo of any partition, nor in the central index
        if suite == "code":
            assert q.question.casefold() not in titles  # no ingested FAQ section has this heading
    if suite == "medical":
        assert len({q.corpus for q in data.unanswerable}) > 1  # spread over the ontologies
    if suite == "code":  # (the cheaper suite to load again)
        again = load_suite(suite, **limits, abstain_limit=6, calibration_limit=10)
        assert again.unanswerable == data.unanswerable and again.calibration == data.calibration
