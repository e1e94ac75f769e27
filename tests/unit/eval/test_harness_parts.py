"""Partitions, configuration selection, the per-question log and the embedding cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.configs import select_configs, standard_configs
from eval.embedding_cache import CachingEncoder
from eval.partition import document_vectors, natural_source, partition_documents
from eval.records import QuestionLog
from federation.config import ChunkingSettings
from silo_node.ingest.readers import make_document


def _doc(doc_id: str, text: str, corpus: str = "mondo"):
    return make_document(doc_id, doc_id, text, {"corpus": corpus}, source=doc_id)


# partitions -------------------------------------------------------------------------


def test_natural_partition_is_one_silo_per_source_and_python_docs_by_folder() -> None:
    docs = [
        _doc("MONDO:1", "a disease", "mondo"),
        _doc("HP:1", "a phenotype", "hpo"),
        _doc("pydoc:library/json.rst.txt#json", "json module", "python-docs"),
        _doc("pydoc:faq/general.rst.txt#what-is-python", "faq", "python-docs"),
    ]
    parts = partition_documents(docs, "natural", silos=99)
    assert sorted(parts) == ["hpo", "mondo", "python-faq", "python-library"]
    assert natural_source(docs[2]) == "python-library"
    assert sum(len(v) for v in parts.values()) == len(docs)


def test_iid_partition_is_a_seeded_split_into_equal_parts() -> None:
    docs = [_doc(f"D:{i}", f"text {i}") for i in range(20)]
    parts = partition_documents(docs, "iid", silos=4, seed=1)
    assert [len(v) for v in parts.values()] == [5, 5, 5, 5]
    assert {d.doc_id for v in parts.values() for d in v} == {d.doc_id for d in docs}
    assert parts == partition_documents(docs, "iid", silos=4, seed=1)
    assert parts != partition_documents(docs, "iid", silos=4, seed=2)


def test_topical_partition_separates_topics(encoder) -> None:
    cardiac = [f"Disease of the heart muscle number {i}: cardiomyopathy and arrhythmia." for i in range(6)]
    code = [f"Python function {i} parses a JSON string into a dictionary." for i in range(6)]
    docs = [_doc(f"C:{i}", t) for i, t in enumerate(cardiac)] + [_doc(f"P:{i}", t) for i, t in enumerate(code)]
    vectors = document_vectors(docs, encoder, ChunkingSettings())
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    parts = partition_documents(docs, "topical", silos=2, vectors=vectors, seed=0)
    groups = sorted(sorted(d.doc_id[0] for d in v) for v in parts.values())
    assert groups == [["C"] * 6, ["P"] * 6]


def test_partition_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="empty"):
        partition_documents([], "iid", silos=2)
    with pytest.raises(ValueError, match="one vector per document"):
        partition_documents([_doc("A", "a")], "topical", silos=2)
    with pytest.raises(ValueError, match="unknown partition"):
        partition_documents([_doc("A", "a")], "alphabetical", silos=2)  # type: ignore[arg-type]


# configurations ---------------------------------------------------------------------


def test_configs_select_by_name_and_glob_in_standard_order() -> None:
    names = [c.name for c in standard_configs()]
    assert names[:3] == ["no-rag", "central", "fed-all"]
    assert {"fed-routed-centroid", "fed-routed-learned", "fed-noisy-eps1", "fed-merge-rrf", "fed-all@topical"} <= set(
        names
    )
    assert [c.name for c in select_configs("fed-routed-*@iid,no-rag")] == [
        "no-rag",
        "fed-routed-centroid@iid",
        "fed-routed-learned@iid",
    ]
    assert len(select_configs("all")) == len(names)
    with pytest.raises(ValueError, match=r"unknown configuration.*fed-typo"):
        select_configs("fed-all,fed-typo")


def test_every_config_describes_itself() -> None:
    descriptions = {c.name: c.describe() for c in standard_configs()}
    assert "exact" in descriptions["central"]
    assert "epsilon 1" in descriptions["fed-noisy-eps1"]
    assert "learned router" in descriptions["fed-routed-learned@topical"]
    assert "BM25" in descriptions["fed-lexical"] and "fused" in descriptions["fed-hybrid"]
    assert "BM25" not in descriptions["fed-all"]


# the per-question log ---------------------------------------------------------------


def _row(i: int) -> dict[str, object]:
    return {"suite": "medical", "config": "fed-all", "kind": "retrieval", "id": f"q{i}", "recall": 1.0}


def test_log_resumes_and_drops_a_torn_last_line(tmp_path) -> None:
    path = tmp_path / "questions.jsonl"
    log = QuestionLog(path)
    for i in range(3):
        log.append(_row(i))
    with path.open("a", encoding="utf-8") as handle:  # a crash in the middle of a write
        handle.write(json.dumps(_row(3))[:20])
    resumed = QuestionLog(path)
    assert len(resumed) == 3
    assert ("medical", "fed-all", "retrieval", "q1") in resumed
    assert ("medical", "fed-all", "retrieval", "q3") not in resumed
    resumed.append(_row(3))
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["q0", "q1", "q2", "q3"]


# the embedding cache ----------------------------------------------------------------


def test_cache_returns_the_same_vectors_and_persists(tmp_path, encoder) -> None:
    texts = ["hypertrophic cardiomyopathy", "json.loads parses a string", "hypertrophic cardiomyopathy"]
    cached = CachingEncoder(encoder, tmp_path)
    first = cached.encode(texts)
    assert np.allclose(first, encoder.encode(texts), atol=1e-6)
    assert cached.misses == 2 and cached.hits == 1
    cached.save()
    again = CachingEncoder(encoder, tmp_path)
    assert np.allclose(again.encode(texts[:2]), first[:2])
    assert again.misses == 0 and again.hits == 2
    assert again.fingerprint == encoder.fingerprint


def test_the_routing_check_compares_a_router_with_every_silo_on_the_same_questions() -> None:
    from eval.report import routing_check

    every = [{"id": f"q{i}", "recall": 1.0, "silos_asked": ["a", "b", "c", "d"]} for i in range(10)]
    good = [{"id": f"q{i}", "recall": 1.0 if i else 0.5, "silos_asked": ["a", "b"]} for i in range(10)]
    costly = [{"id": f"q{i}", "recall": 1.0, "silos_asked": ["a", "b", "c"]} for i in range(10)]
    lossy = [{"id": f"q{i}", "recall": 0.5, "silos_asked": ["a"]} for i in range(10)]
    check = routing_check(good, every)
    assert check is not None and check["met"] and check["call_fraction"] == 0.5
    assert check["recall_ratio"]["mean"] == pytest.approx(0.95)
    assert check["recall_ratio"]["low"] <= 0.95 <= check["recall_ratio"]["high"]
    assert not routing_check(costly, every)["met"]  # type: ignore[index]
    assert not routing_check(lossy, every)["met"]  # type: ignore[index]
    assert routing_check(good, []) is None
