"""A user's own corpus and questions as an evaluation suite: silos from folders or a field, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.own_suite import load_own_corpus, load_own_questions, load_own_suite, own_corpus_digest
from eval.partition import partition_documents
from federation.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, *records: dict) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    write(root / "cardiology" / "hcm.md", "# Hypertrophic cardiomyopathy\n\nThe heart muscle thickens.\n")
    write(root / "cardiology" / "guides" / "afib.md", "# Atrial fibrillation\n\nAn irregular heart rhythm.\n")
    jsonl(root / "python" / "docs.jsonl", {"id": "json-loads", "title": "json.loads", "text": "Parse a JSON string."})
    return root


def test_each_folder_is_a_silo_and_the_natural_partition_keeps_it(corpus: Path) -> None:
    documents = load_own_corpus(corpus)
    assert {d.doc_id: d.metadata["corpus"] for d in documents} == {
        "hcm.md": "cardiology",
        "guides/afib.md": "cardiology",
        "json-loads": "python",
    }
    parts = partition_documents(documents, "natural", silos=3)
    assert {name: sorted(d.doc_id for d in docs) for name, docs in parts.items()} == {
        "cardiology": ["guides/afib.md", "hcm.md"],
        "python": ["json-loads"],
    }


def test_a_jsonl_corpus_names_the_silo_in_a_field_or_its_metadata(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "corpus.jsonl",
        {"id": 1, "title": "Gout", "text": "Uric acid crystals in a joint.", "owner": "rheumatology"},
        {"id": "2", "text": "Lupus harms skin and kidneys.", "metadata": {"owner": "rheumatology", "year": 2020}},
        {"id": "3", "text": "Asthma narrows the airways.", "owner": "lungs"},
    )
    documents = load_own_corpus(path, silo_field="owner")
    assert [(d.doc_id, d.metadata["corpus"]) for d in documents] == [
        ("1", "rheumatology"),
        ("2", "rheumatology"),
        ("3", "lungs"),
    ]
    assert documents[1].metadata["year"] == 2020
    with pytest.raises(ConfigError, match=r"without a 'silo' field .* line 1; line 2; line 3"):
        load_own_corpus(path)


def test_questions_name_their_gold_documents_and_are_sampled_by_seed(corpus: Path, tmp_path: Path) -> None:
    questions = jsonl(
        tmp_path / "q.jsonl",
        {"id": "a", "question": "Which disease thickens the heart muscle?", "gold": "hcm.md"},
        {"question": "What is an irregular heart rhythm?", "gold": ["guides/afib.md", "hcm.md"]},
        {"id": "c", "question": "How do I parse JSON?", "gold": ["json-loads"]},
    )
    asked = load_own_questions(questions, load_own_corpus(corpus))
    assert [(q.id, sorted(q.gold_doc_ids), q.corpus) for q in asked] == [
        ("a", ["hcm.md"], "cardiology"),
        ("q2", ["guides/afib.md", "hcm.md"], "cardiology"),
        ("c", ["json-loads"], "python"),
    ]
    data = load_own_suite(corpus, questions, retrieval_limit=2, seed=0)
    again = load_own_suite(corpus, questions, retrieval_limit=2, seed=0)
    assert data.suite.name == "own" and len(data.documents) == 3 and data.suite.corpora == ("cardiology", "python")
    assert len(data.retrieval) == 2 and [q.id for q in data.retrieval] == [q.id for q in again.retrieval]
    assert not data.multiple_choice and not data.code and not data.unanswerable


def test_bad_questions_are_named_by_line(corpus: Path, tmp_path: Path) -> None:
    questions = jsonl(
        tmp_path / "q.jsonl",
        {"id": "a", "question": "What?", "gold": "missing.md"},
        {"id": "b", "question": "  ", "gold": "hcm.md"},
        {"id": "c", "question": "Why?"},
        {"id": "d", "question": "Who?", "gold": "hcm.md"},
        {"id": "d", "question": "Who again?", "gold": "hcm.md"},
    )
    with pytest.raises(ConfigError) as error:
        load_own_questions(questions, load_own_corpus(corpus))
    message = str(error.value)
    assert "line 1: gold document(s) 'missing.md' are not in the corpus" in message
    assert "line 2: needs a 'question'" in message and "line 3: needs 'gold'" in message
    assert "line 5: question id 'd' given twice" in message
    write(tmp_path / "broken.jsonl", '{"question": "x", "gold": "hcm.md"}\n{not json\n')
    with pytest.raises(ConfigError, match=r"broken.jsonl:2: invalid JSON"):
        load_own_questions(tmp_path / "broken.jsonl", load_own_corpus(corpus))


def test_a_corpus_that_cannot_be_split_into_silos_is_refused(corpus: Path, tmp_path: Path) -> None:
    write(corpus / "loose.md", "# Loose\n\nNot in a silo folder.\n")
    with pytest.raises(ConfigError, match=r"must be in a silo's folder.*loose.md"):
        load_own_corpus(corpus)
    (corpus / "loose.md").unlink()
    write(corpus / "derm" / "hcm.md", "# Again\n\nThe same id in another silo.\n")
    with pytest.raises(ConfigError, match=r"unique across silos.*'hcm.md'"):
        load_own_corpus(corpus)
    bad_name = jsonl(tmp_path / "c.jsonl", {"id": "1", "text": "x y z", "silo": "no spaces allowed"})
    with pytest.raises(ConfigError, match=r"silo name 'no spaces allowed'"):
        load_own_corpus(bad_name)
    with pytest.raises(ConfigError, match="does not exist"):
        load_own_corpus(tmp_path / "nowhere")


def test_the_digest_changes_with_any_file(corpus: Path) -> None:
    before = own_corpus_digest(corpus)
    assert own_corpus_digest(corpus) == before
    write(corpus / "python" / "docs.jsonl", '{"id": "json-loads", "text": "Parse JSON text."}\n')
    assert own_corpus_digest(corpus) != before
