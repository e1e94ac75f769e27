"""The evaluation datasets: packaged MMLU, HumanEval, MIRAGE files, ontology and Python FAQ questions."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from eval.datasets import (
    MMLU_CS_SUBJECTS,
    MMLU_MED_SUBJECTS,
    ONTOLOGY_CORPORA,
    MultipleChoiceQuestion,
    RetrievalQuestion,
    load_humaneval,
    load_mirage,
    load_mmlu_csv,
    load_mmlu_jsonl,
    mmlu_subset,
    ontology_questions,
    python_faq_questions,
)
from federation.errors import ConfigError
from silo_node.corpora import load_corpus
from silo_node.ingest import SourceDocument

pytestmark = pytest.mark.unit

PYTHON_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
MED_COUNTS = {
    "anatomy": 135,
    "clinical_knowledge": 265,
    "college_biology": 144,
    "college_medicine": 173,
    "medical_genetics": 100,
    "professional_medicine": 272,
}


@pytest.fixture(scope="module")
def mmlu() -> list[MultipleChoiceQuestion]:
    return load_mmlu_jsonl()


@pytest.fixture(scope="module")
def ontologies() -> dict[str, list[SourceDocument]]:
    """The four ontology corpora, read once for the module."""
    return {name: load_corpus(name) for name in ONTOLOGY_CORPORA}


@pytest.fixture(scope="module")
def python_docs_ids() -> set[str]:
    if not PYTHON_DOCS.is_dir():
        pytest.skip("the Python FAQ needs the Debian package python3.11-doc: apt-get install python3.11-doc")
    return {d.doc_id for d in load_corpus("python-docs")}


@pytest.fixture(scope="module")
def faq(python_docs_ids: set[str]) -> list[RetrievalQuestion]:
    return python_faq_questions()


# MMLU ---------------------------------------------------------------------------------------


def test_the_packaged_mmlu_has_every_test_question_once_with_a_valid_answer(mmlu: list[MultipleChoiceQuestion]) -> None:
    assert len(mmlu) == 14042  # The packaged file's two repeated header rows are not questions.
    assert len({q.subject for q in mmlu}) == 57
    assert len({q.id for q in mmlu}) == len(mmlu)
    assert all(len(q.choices) == 4 and 0 <= q.answer < 4 and q.dataset == "mmlu" for q in mmlu)
    assert not any(q.question == "question" for q in mmlu)
    assert {q.answer_letter for q in mmlu} == {"A", "B", "C", "D"}


def test_mmlu_med_is_mirages_1089_questions(mmlu: list[MultipleChoiceQuestion]) -> None:
    med = mmlu_subset(mmlu, MMLU_MED_SUBJECTS)
    assert len(med) == 1089
    assert Counter(q.subject for q in med) == MED_COUNTS
    ids = {q.id for q in med}
    assert "mmlu:anatomy-0" in ids and "mmlu:professional_medicine-271" in ids  # Numbered per subject from 0.


def test_mmlu_cs_subjects_each_have_questions(mmlu: list[MultipleChoiceQuestion]) -> None:
    cs = mmlu_subset(mmlu, MMLU_CS_SUBJECTS)
    counts = Counter(q.subject for q in cs)
    assert set(counts) == set(MMLU_CS_SUBJECTS) and min(counts.values()) >= 100


def test_a_subset_of_an_unknown_subject_is_refused(mmlu: list[MultipleChoiceQuestion]) -> None:
    with pytest.raises(ConfigError, match="anatomyy"):
        mmlu_subset(mmlu, ["anatomy", "anatomyy"])


def test_mmlu_csv_round_trip_leaves_a_bad_row_out_with_its_file_and_line(
    mmlu: list[MultipleChoiceQuestion], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    anatomy = mmlu_subset(mmlu, ["anatomy"])[:6]
    path = tmp_path / "anatomy_test.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        for i, q in enumerate(anatomy):
            if i == 3:  # Rows 4 and 5 are bad: too few columns, an answer that is no letter.
                writer.writerow(["a question", "x", "y", "z", "A"])
                writer.writerow(["another, with a comma\nand a line break", "x", "y", "z", "w", "E"])
            writer.writerow([q.question, *q.choices, q.answer_letter])
    (tmp_path / "anatomy_dev.csv").write_text("not,a,test,file,at,all\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="eval.datasets.mmlu"):
        loaded = load_mmlu_csv(tmp_path)
    expected = [(q.question, q.choices, q.answer, q.subject) for q in anatomy]
    assert [(q.question, q.choices, q.answer, q.subject) for q in loaded] == expected
    numbers = [0, 1, 2, 5, 6, 7]  # The bad rows keep their numbers: later ids do not shift.
    assert [q.id for q in loaded] == [f"mmlu:anatomy-{n}" for n in numbers]
    assert f"{path}:4: 5 columns" in caplog.text
    assert f"{path}:5: answer 'E'" in caplog.text


def test_mmlu_csv_without_files_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no MMLU folder"):
        load_mmlu_csv(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"_test\.csv"):
        load_mmlu_csv(tmp_path)


def test_mmlu_jsonl_leaves_bad_lines_out_and_an_empty_file_is_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"question": "2 + 2?", "answer_a": "3", "answer_b": "4", "answer_c": "5", "answer_d": "6"}
    good |= {"correct_answer": "B", "topic": "elementary mathematics"}
    path = tmp_path / "mmlu.jsonl"
    lines = [json.dumps(good), "{not json", json.dumps({**good, "correct_answer": "F"}), json.dumps(good)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="eval.datasets.mmlu"):
        loaded = load_mmlu_jsonl(path)
    assert [(q.id, q.answer, q.subject) for q in loaded] == [
        ("mmlu:elementary_mathematics-0", 1, "elementary_mathematics"),
        ("mmlu:elementary_mathematics-2", 1, "elementary_mathematics"),
    ]
    assert f"{path}:2: invalid JSON" in caplog.text and f"{path}:3: answer 'F'" in caplog.text
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no MMLU questions"):
        load_mmlu_jsonl(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_mmlu_jsonl(tmp_path / "absent.jsonl")


# MIRAGE -------------------------------------------------------------------------------------


def _mirage_file(tmp_path: Path) -> Path:
    four = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Insulin"}
    benchmark = {
        "medqa": {
            "0000": {"question": "Which drug lowers glucose?", "options": four, "answer": "D"},
            "0001": {"question": "Broken", "options": four, "answer": "E"},
        },
        "pubmedqa": {
            "123": {"question": "Does X help?", "options": {"A": "yes", "B": "no", "C": "maybe"}, "answer": "C"}
        },
        "bioasq": {"ab1": {"question": "Is Y a gene?", "options": {"A": "yes", "B": "no"}, "answer": "A"}},
        "mmlu": {"anatomy-3": {"question": "Where is the liver?", "options": four, "answer": "B"}},
    }
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps(benchmark), encoding="utf-8")
    return path


def test_mirage_reads_every_task_and_leaves_a_bad_question_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _mirage_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="eval.datasets.mirage"):
        questions = load_mirage(path)
    assert [(q.id, q.answer, q.answer_letter, q.subject, q.dataset) for q in questions] == [
        ("mirage/medqa:0000", 3, "D", "medqa", "mirage/medqa"),
        ("mirage/pubmedqa:123", 2, "C", "pubmedqa", "mirage/pubmedqa"),
        ("mirage/bioasq:ab1", 0, "A", "bioasq", "mirage/bioasq"),
        ("mirage/mmlu:anatomy-3", 1, "B", "anatomy", "mirage/mmlu"),
    ]
    assert questions[1].choices == ("yes", "no", "maybe") and questions[2].choices == ("yes", "no")
    assert "medqa/0001" in caplog.text and "'E'" in caplog.text


def test_mirage_reads_the_tasks_asked_for_and_refuses_unknown_ones(tmp_path: Path) -> None:
    path = _mirage_file(tmp_path)
    assert [q.dataset for q in load_mirage(path, ["bioasq", "pubmedqa"])] == ["mirage/bioasq", "mirage/pubmedqa"]
    with pytest.raises(ConfigError, match="no task medmcqa"):
        load_mirage(path, ["medmcqa"])
    path.write_text('{"medqa": [', encoding="utf-8")
    with pytest.raises(ConfigError, match="not JSON"):
        load_mirage(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_mirage(tmp_path / "absent.json")


# Ontology questions -------------------------------------------------------------------------


def synonyms(term: SourceDocument) -> list[str]:
    """The names on a term's ``Synonyms: a; b`` line."""
    return term.text.partition("\nSynonyms: ")[2].split("; ") if "\nSynonyms: " in term.text else []


@pytest.mark.parametrize("corpus", ONTOLOGY_CORPORA)
def test_ontology_questions_ask_for_an_unambiguous_synonym_of_a_term_in_the_corpus(
    corpus: str, ontologies: dict[str, list[SourceDocument]]
) -> None:
    documents = ontologies[corpus]
    by_id = {d.doc_id: d for d in documents}
    questions = ontology_questions(corpus, limit=200, documents=documents)
    assert len(questions) == 200 and len({q.id for q in questions}) == 200
    owners = Counter(name.casefold() for d in documents for name in {d.title, *synonyms(d)})
    for q in questions:
        assert q.corpus == corpus and q.dataset == "ontology-qa" and len(q.gold_doc_ids) == 1
        (gold,) = q.gold_doc_ids
        synonym = q.question.removeprefix("What is ").removesuffix("?")
        term = by_id[gold]
        assert synonym in synonyms(term)
        assert len(synonym) >= 4 and synonym.casefold() != term.title.casefold()
        assert owners[synonym.casefold()] == 1  # No other term is called so.


def test_ontology_questions_are_deterministic_and_honour_exclusions(
    ontologies: dict[str, list[SourceDocument]],
) -> None:
    documents = ontologies["mondo"]
    first = ontology_questions("mondo", limit=50, seed=3, documents=documents)
    assert first == ontology_questions("mondo", limit=50, seed=3, documents=documents)
    assert first != ontology_questions("mondo", limit=50, seed=4, documents=documents)
    excluded = {doc_id for q in first[:25] for doc_id in q.gold_doc_ids}
    again = ontology_questions("mondo", limit=50, seed=3, exclude_doc_ids=excluded, documents=documents)
    assert not excluded & {doc_id for q in again for doc_id in q.gold_doc_ids}
    assert ontology_questions("cl", limit=20) == ontology_questions("cl", limit=20, documents=ontologies["cl"])
    assert ontology_questions("cl", limit=0, documents=ontologies["cl"]) == []


def test_ontology_questions_refuse_a_corpus_without_synonyms_and_a_negative_limit() -> None:
    with pytest.raises(ConfigError, match="no ontology questions for corpus 'wiki'"):
        ontology_questions("wiki", limit=5)
    with pytest.raises(ConfigError, match="0 or more"):
        ontology_questions("cl", limit=-1, documents=[])


# Python FAQ ---------------------------------------------------------------------------------


def test_faq_questions_are_headings_whose_gold_section_is_in_python_docs(
    faq: list[RetrievalQuestion], python_docs_ids: set[str]
) -> None:
    assert len(faq) > 50
    assert all(q.question.endswith("?") and "`" not in q.question for q in faq)
    assert all(
        q.corpus == "python-docs" and q.dataset == "python-faq" and q.gold_doc_ids <= python_docs_ids for q in faq
    )
    assert all(gold.startswith("pydoc:faq/") for q in faq for gold in q.gold_doc_ids)
    assert len({q.id for q in faq}) == len(faq)
    binary = next(q for q in faq if q.question == "How can I create a stand-alone binary from a Python script?")
    assert binary.gold_doc_ids == {"pydoc:faq/programming#how-can-i-create-a-stand-alone-binary-from-a-python-script"}


def test_faq_samples_are_seeded_subsets(faq: list[RetrievalQuestion]) -> None:
    sample = python_faq_questions(limit=20, seed=1)
    assert len(sample) == 20 and set(sample) <= set(faq)
    assert sample == python_faq_questions(limit=20, seed=1)
    assert python_faq_questions(limit=0) == []
    with pytest.raises(ConfigError, match="0 or more"):
        python_faq_questions(limit=-1)


# HumanEval ----------------------------------------------------------------------------------


def test_humaneval_has_164_problems_whose_solution_defines_the_entry_point() -> None:
    problems = load_humaneval()
    assert [p.id for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    for problem in problems:
        module = ast.parse(problem.prompt + problem.canonical_solution)  # Parsed, never run.
        defined = {node.name for node in ast.walk(module) if isinstance(node, ast.FunctionDef)}
        assert problem.entry_point in defined, problem.id
        assert "def check(candidate)" in problem.test and problem.dataset == "humaneval"


def test_humaneval_reads_plain_jsonl_and_leaves_a_bad_line_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = [
        {"task_id": "T/0", "prompt": "def f():\n", "entry_point": "f", "canonical_solution": "    return 1\n"},
        {"task_id": "T/1", "prompt": "def g():\n", "entry_point": "g", "canonical_solution": "    return 2\n"},
    ]
    records = [{**r, "test": "def check(candidate):\n    assert candidate()\n"} for r in records]
    path = tmp_path / "problems.jsonl"
    path.write_text(f"{json.dumps(records[0])}\n[1, 2]\n\n{json.dumps(records[1])}\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="eval.datasets.humaneval"):
        problems = load_humaneval(path)
    assert [(p.id, p.entry_point) for p in problems] == [("T/0", "f"), ("T/1", "g")]
    assert f"{path}:2: not a JSON object" in caplog.text
    packed = tmp_path / "problems.jsonl.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert load_humaneval(packed) == problems
    with pytest.raises(ConfigError, match="cannot read"):
        load_humaneval(tmp_path / "absent.jsonl")
