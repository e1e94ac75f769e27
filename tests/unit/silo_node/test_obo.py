from __future__ import annotations

from pathlib import Path

import pytest

from silo_node.ingest import IngestProblem, SourceDocument, iter_documents

pytestmark = pytest.mark.unit

LIMIT = 1024 * 1024

HEADER = """format-version: 1.2
data-version: hp/releases/2025-01-16
synonymtypedef: layperson "layperson term"
ontology: hp
"""

SEIZURE = """
[Term]
id: HP:0001250
name: Seizure
def: "A seizure is an intermittent abnormality of nervous system physiology." [https://orcid.org/0000-0002-0736-9199]
synonym: "Epileptic seizure" EXACT []
synonym: "Seizures" EXACT plural_form []
is_a: HP:0012638 ! Abnormal nervous system physiology
"""


def _write(tmp_path: Path, text: str, name: str = "hp.obo") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _read(*paths: Path, limit: int = LIMIT) -> list[SourceDocument | IngestProblem]:
    return list(iter_documents(list(paths), max_file_bytes=limit))


def _docs(items: list[SourceDocument | IngestProblem]) -> dict[str, SourceDocument]:
    return {item.doc_id: item for item in items if isinstance(item, SourceDocument)}


def _problems(items: list[SourceDocument | IngestProblem]) -> list[IngestProblem]:
    return [item for item in items if isinstance(item, IngestProblem)]


def test_term_becomes_a_document_with_name_definition_and_synonyms(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + SEIZURE)
    items = _read(path)
    assert _problems(items) == []
    doc = _docs(items)["HP:0001250"]
    assert doc.title == "Seizure"
    assert doc.text == (
        "Seizure. A seizure is an intermittent abnormality of nervous system physiology.\n"
        "Synonyms: Epileptic seizure; Seizures"
    )
    assert doc.metadata == {"ontology": "hp", "format": "obo"}
    assert doc.source == f"{path}:6"


def test_ontology_falls_back_to_the_file_stem(tmp_path: Path) -> None:
    path = _write(tmp_path, "format-version: 1.4\n" + SEIZURE, name="phenotypes.obo")
    assert _docs(_read(path))["HP:0001250"].metadata["ontology"] == "phenotypes"


def test_obsolete_terms_and_typedefs_are_left_out_silently(tmp_path: Path) -> None:
    text = (
        HEADER
        + SEIZURE
        + (
            "\n[Term]\nid: HP:0000000\nname: obsolete Old thing\n"
            'def: "Gone." []\nis_obsolete: true\nreplaced_by: HP:0001250\n'
            "\n[Typedef]\nid: has_part\nname: has part\n"
            'def: "A typedef, not a term." []\nis_transitive: true\n'
        )
    )
    items = _read(_write(tmp_path, text))
    assert list(_docs(items)) == ["HP:0001250"]
    assert _problems(items) == []


def test_escapes_continuations_comments_and_crlf(tmp_path: Path) -> None:
    text = (
        "\ufeffontology: chest\r\n"  # After a byte order mark, as some editors write.
        "\r\n[Term]\r\n"
        "id: HP:0000768 ! Pectus carinatum\r\n"
        'name: Pectus carinatum {source="x"}\r\n'
        'def: "A protrusion (\\"pigeon chest\\") of the sternum, \\\r\n'
        'also called keel chest; path C:\\\\ ends here" [PMID:1, https://example.org/\\:x]\r\n'
        'synonym: "Pigeon \\Wchest" EXACT layperson [] {source="y"}\r\n'
        'exact_synonym: "Keel chest" []\r\n'
    )
    items = _read(_write(tmp_path, text))
    assert _problems(items) == []
    doc = _docs(items)["HP:0000768"]
    assert doc.title == "Pectus carinatum"
    assert doc.metadata == {"ontology": "chest", "format": "obo"}
    assert doc.text == (
        'Pectus carinatum. A protrusion ("pigeon chest") of the sternum, also called keel chest; '
        "path C:\\ ends here\nSynonyms: Pigeon chest; Keel chest"
    )


def test_term_without_definition_keeps_synonyms_or_is_skipped(tmp_path: Path) -> None:
    text = (
        HEADER
        + "\n[Term]\nid: HP:0000001\nname: All\ncomment: Root of all terms.\nxref: UMLS:C0444868\n"
        + '\n[Term]\nid: HP:0000002\nname: Abnormality of body height\nsynonym: "Abnormality of body height" '
        + "EXACT layperson []\n"
        + '\n[Term]\nid: HP:0000003\nname: Short stature\nsynonym: "Small stature" EXACT layperson []\n'
        + 'synonym: "small STATURE" RELATED []\nsynonym: "Short stature" EXACT []\n'
    )
    items = _read(_write(tmp_path, text))
    assert _problems(items) == []
    # HP:0000001 has neither; HP:0000002's only synonym repeats its name.
    assert list(_docs(items)) == ["HP:0000003"]
    assert _docs(items)["HP:0000003"].text == "Short stature.\nSynonyms: Small stature"


def test_malformed_stanzas_are_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    text = (
        HEADER
        + '\n[Term]\nid: HP:0000100\nname: Unterminated\ndef: "No closing quote [PMID:1]\n'
        + '\n[Term]\nname: No id here\ndef: "Something." []\n'
        + '\n[Term]\nid: HP:0000101\ndef: "Definition without a name." []\n'
        + '\n[Term]\nid: HP:0000102\nname: Bad line\nthis line has no colon\ndef: "Text." []\n'
        + '\n[Term]\nid: HP:0000103\nname: Two names\nname: Second\ndef: "Text." []\n'
        + "\n[Term]\nid: HP:0000104\nname: Unquoted synonym\nsynonym: Foo EXACT []\n"
        + SEIZURE
    )
    path = _write(tmp_path, text)
    items = _read(path)
    assert list(_docs(items)) == ["HP:0001250"]
    problems = [(p.source, p.reason) for p in _problems(items)]
    assert problems == [
        (f"{path}:6", "[Term] HP:0000100: line 9: 'def' has no closing quote"),
        (f"{path}:11", "[Term] at line 11: missing 'id'"),
        (f"{path}:15", "[Term] HP:0000101: missing 'name'"),
        (f"{path}:19", "[Term] HP:0000102: line 22: expected 'tag: value', got 'this line has no colon'"),
        (f"{path}:25", "[Term] HP:0000103: line 28: more than one 'name'"),
        (f"{path}:31", "[Term] HP:0000104: line 34: 'synonym' must start with a quoted string"),
    ]


def test_duplicate_term_ids_are_reported_and_the_first_kept(tmp_path: Path) -> None:
    other = SEIZURE.replace("name: Seizure", "name: Fit")
    first = _write(tmp_path, HEADER + SEIZURE + other)
    items = _read(first)
    assert _docs(items)["HP:0001250"].title == "Seizure"
    assert [(p.source, p.reason) for p in _problems(items)] == [
        (f"{first}:14", f"duplicate document id 'HP:0001250', first seen in {first}:6"),
    ]
    # Across files too: the same term in a second ontology file.
    second = _write(tmp_path, SEIZURE, name="copy.obo")
    assert [p.reason for p in _problems(_read(first, second))][-1].startswith("duplicate document id 'HP:0001250'")


def test_invalid_utf8_drops_only_its_stanza(tmp_path: Path) -> None:
    bad = b"\n[Term]\nid: HP:0000200\nname: Broken\n" + b'def: "caf\xe9" []\n'
    path = tmp_path / "hp.obo"
    path.write_bytes(HEADER.encode() + bad + SEIZURE.encode())
    items = _read(path)
    assert list(_docs(items)) == ["HP:0001250"]
    [problem] = _problems(items)
    assert problem.source == f"{path}:6"
    assert problem.reason.startswith("[Term] HP:0000200: line 9: not valid UTF-8 at byte ")


def test_files_with_no_usable_terms_and_oversize_files_are_problems(tmp_path: Path) -> None:
    empty = _write(tmp_path, HEADER, name="empty.obo")
    [problem] = _read(empty)
    assert isinstance(problem, IngestProblem) and problem.source == str(empty)
    assert problem.reason.startswith("empty ontology")
    big = _write(tmp_path, HEADER + SEIZURE, name="big.obo")
    [problem] = _read(big, limit=100)
    assert isinstance(problem, IngestProblem) and "over the 100 bytes limit" in problem.reason
    binary = tmp_path / "binary.obo"
    binary.write_bytes(b"format-version: 1.2\0\0")
    assert [p.reason for p in _problems(_read(binary))] == ["binary file (NUL bytes)"]


def test_directory_walk_picks_up_obo_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("A note\n\nbody", encoding="utf-8")
    _write(tmp_path, HEADER + SEIZURE)
    items = _read(tmp_path)
    assert _problems(items) == []
    assert sorted(_docs(items)) == ["HP:0001250", "notes.txt"]
