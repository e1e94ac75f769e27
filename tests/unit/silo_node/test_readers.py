from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from silo_node.ingest import (
    SUPPORTED_SUFFIXES,
    IngestProblem,
    SourceDocument,
    chunk_text,
    iter_documents,
    sample_data_dir,
)

pytestmark = pytest.mark.unit

LIMIT = 1024 * 1024


def _read(*paths: Path, limit: int = LIMIT) -> list[SourceDocument | IngestProblem]:
    return list(iter_documents(list(paths), max_file_bytes=limit))


def _docs(items: list[SourceDocument | IngestProblem]) -> list[SourceDocument]:
    return [item for item in items if isinstance(item, SourceDocument)]


def _problems(items: list[SourceDocument | IngestProblem]) -> list[IngestProblem]:
    return [item for item in items if isinstance(item, IngestProblem)]


def _one_doc(path: Path) -> SourceDocument:
    items = _read(path)
    assert len(items) == 1 and isinstance(items[0], SourceDocument), items
    return items[0]


def _one_problem(path: Path, limit: int = LIMIT) -> IngestProblem:
    items = _read(path, limit=limit)
    assert len(items) == 1 and isinstance(items[0], IngestProblem), items
    return items[0]


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def _jsonl(path: Path, *lines: object) -> Path:
    return _write(path, "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")


# --- formats --------------------------------------------------------------------------


def test_supported_suffixes() -> None:
    assert frozenset({".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".jsonl", ".obo"}) == SUPPORTED_SUFFIXES


def test_plain_text_is_normalised_and_titled_by_its_first_line(tmp_path: Path) -> None:
    raw = "\n  \nCafe\u0301 notes   \r\nline two\t \r\n\r\n\r\n\r\n\r\nlast\x07 paragraph\n\n"
    doc = _one_doc(_write(tmp_path / "notes.txt", raw))
    assert doc.title == "Café notes"
    assert doc.text == "Café notes\nline two\n\nlast paragraph"
    assert doc.doc_id == "notes.txt"
    assert doc.source == str(tmp_path / "notes.txt")
    assert doc.metadata == {"format": "txt"} and doc.source == str(tmp_path / "notes.txt")


def test_long_first_line_title_is_truncated(tmp_path: Path) -> None:
    doc = _one_doc(_write(tmp_path / "a.txt", "word " * 100))
    assert len(doc.title) <= 200
    assert doc.title.startswith("word word")


def test_markdown_title_is_the_first_h1_outside_code(tmp_path: Path) -> None:
    raw = "Intro line\n\n```\n# not a title\n```\n\n## Section\n\n# Real Title ##\n\nBody."
    doc = _one_doc(_write(tmp_path / "a.md", raw))
    assert doc.title == "Real Title"
    assert doc.text == raw  # markdown stays as source
    assert doc.metadata["format"] == "md"


def test_markdown_front_matter_gives_the_title_and_leaves_the_text(tmp_path: Path) -> None:
    doc = _one_doc(_write(tmp_path / "a.markdown", '---\ntitle: "Gout basics"\ntags: [x]\n---\n# Heading\n\nBody.'))
    assert doc.title == "Gout basics"
    assert doc.text == "# Heading\n\nBody."


def test_rst_title_and_adornments(tmp_path: Path) -> None:
    raw = "=========\nThe Title\n=========\n\nIntro text.\n\nSection\n-------\n\nMore text."
    doc = _one_doc(_write(tmp_path / "a.rst", raw))
    assert doc.title == "The Title"
    assert doc.text == "The Title\n\nIntro text.\n\nSection\n\nMore text."
    assert doc.metadata["format"] == "rst"


def test_html_keeps_visible_text_only(tmp_path: Path) -> None:
    raw = """<!doctype html><html><head><title> Kidney
      stones </title><style>p { color: red }</style>
    <script>var secret = "not text";</script></head>
    <body><nav>Home</nav><h1>Stones</h1><p>Hard   deposits &amp; <b>crystals</b>.</p>
    <div>Second<br>line</div><template><p>hidden</p></template><svg><title>icon</title></svg>
    <table><tr><td>a</td><td>b</td></tr></table><!-- a comment --></body></html>"""
    doc = _one_doc(_write(tmp_path / "page.html", raw))
    assert doc.title == "Kidney stones"
    assert doc.text == "Home\n\nStones\n\nHard deposits & crystals.\n\nSecond\nline\n\na b"
    assert doc.metadata["format"] == "html"


def test_html_title_falls_back_to_the_first_h1(tmp_path: Path) -> None:
    doc = _one_doc(_write(tmp_path / "page.htm", "<p>Lead</p><h1> First <em>heading</em></h1><h1>Second</h1>"))
    assert doc.title == "First heading"


def test_html_without_visible_text_is_a_problem(tmp_path: Path) -> None:
    problem = _one_problem(_write(tmp_path / "page.html", "<html><script>x()</script></html>"))
    assert problem.reason == "empty file (no visible text)"


# --- problems with files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"  \n\t\r\n ", "empty file (whitespace only)"),
        (b"abc\x00def", "binary file (NUL bytes)"),
        (b"\xff\xfea\x00b\x00", "UTF-16 text (byte order mark); save the file as UTF-8"),
        (b"caf\xc3\xa9 ok\ncaf\xe9", "not valid UTF-8 at byte 12"),
        (b"\xef\xbb\xbfok\xff", "not valid UTF-8 at byte 5"),
    ],
)
def test_unreadable_files_are_reported(tmp_path: Path, content: bytes, reason: str) -> None:
    problem = _one_problem(_write(tmp_path / "f.txt", content))
    assert problem == IngestProblem(str(tmp_path / "f.txt"), reason)


def test_utf8_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    doc = _one_doc(_write(tmp_path / "a.txt", b"\xef\xbb\xbfTitle\nbody"))
    assert doc.title == "Title"
    assert doc.text == "Title\nbody"


def test_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: costs no disk
    tracemalloc.start()
    try:
        problem = _one_problem(big, limit=20 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problem.reason == "file is 50.0 MB, over the 20.0 MB limit (chunking.max_file_bytes)"
    assert peak < 1024 * 1024


def test_size_limit_applies_to_jsonl_and_small_sizes_read_well(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "a.jsonl", {"id": 1, "text": "x" * 3000})
    assert path.stat().st_size == 3022
    assert _one_problem(path, limit=2048).reason == "file is 3.0 KB, over the 2.0 KB limit (chunking.max_file_bytes)"
    assert _one_problem(path, limit=100).reason.endswith("over the 100 bytes limit (chunking.max_file_bytes)")


def test_missing_path_and_unsupported_explicit_file_are_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    pdf = _write(tmp_path / "paper.PDF", b"%PDF")
    bare = _write(tmp_path / "README", "text")
    items = _read(missing, pdf, bare)
    assert [(p.source, p.reason.split(";")[0]) for p in _problems(items)] == [
        (str(missing), "no such file or directory"),
        (str(pdf), "unsupported file type .pdf"),
        (str(bare), "unsupported file type (no suffix)"),
    ]
    assert ".jsonl" in _problems(items)[1].reason  # tells what is supported
    assert _docs(items) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_reported_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    assert _one_problem(fifo).reason == "not a regular file"
    _write(tmp_path / "ok.txt", "fine")
    assert [d.doc_id for d in _docs(_read(tmp_path))] == ["ok.txt"]  # skipped silently inside a directory


# --- directories -----------------------------------------------------------------------


def test_directory_walk_is_sorted_recursive_and_skips_hidden_and_unknown_files(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    for name in ["b.md", "a.txt", "sub/z.rst", "sub/deeper/y.html", "c.txt", "Upper.TXT"]:
        _write(root / name, f"Doc {name}\n\nbody of {name}")
    _write(root / ".hidden.txt", "secret")
    _write(root / ".git/config.txt", "secret")
    _write(root / "notes.pdf", "%PDF")
    _write(root / "image.png", b"\x89PNG\x00")
    items = _read(root)
    assert _problems(items) == []
    assert [d.doc_id for d in _docs(items)] == ["Upper.TXT", "a.txt", "b.md", "c.txt", "sub/deeper/y.html", "sub/z.rst"]
    z = _docs(items)[5]
    assert z.source == str(root / "sub" / "z.rst")
    assert z.title == "Doc sub/z.rst"


def test_symlink_loop_and_repeated_inputs_are_read_once(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    _write(root / "a.txt", "alpha")
    (root / "loop").symlink_to(root, target_is_directory=True)
    items = _read(root, root / "a.txt")
    assert [d.doc_id for d in _docs(items)] == ["a.txt"]
    assert _problems(items) == []


def test_one_bad_file_does_not_stop_the_rest(tmp_path: Path) -> None:
    _write(tmp_path / "1.txt", "first")
    _write(tmp_path / "2.txt", b"\x00\x01")
    _write(tmp_path / "3.txt", b"bad \xff utf8")
    _write(tmp_path / "4.txt", "last")
    items = _read(tmp_path)
    assert [type(i).__name__ for i in items] == ["SourceDocument", "IngestProblem", "IngestProblem", "SourceDocument"]


def test_duplicate_ids_across_inputs_keep_the_first(tmp_path: Path) -> None:
    first = _write(tmp_path / "one" / "same.txt", "first version")
    second = _write(tmp_path / "two" / "same.txt", "second version")
    items = _read(first, second)
    assert [d.text for d in _docs(items)] == ["first version"]
    assert _problems(items) == [
        IngestProblem(str(second), f"duplicate document id 'same.txt', first seen in {first}"),
    ]


# --- JSONL ----------------------------------------------------------------------------


def test_jsonl_records_become_documents(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "c.jsonl",
        {"id": "a", "title": "  Alpha\n title ", "text": "Text A\r\n", "metadata": {"specialty": "cardiology"}},
        "",
        {"id": 42, "text": "Text B"},
        {"id": "c", "text": "Text C", "title": None, "metadata": None, "url": "ignored"},
    )
    docs = _docs(_read(path))
    assert [(d.doc_id, d.title, d.text, d.metadata, d.source) for d in docs] == [
        ("a", "Alpha title", "Text A", {"specialty": "cardiology"}, f"{path}:1"),
        ("42", "", "Text B", {}, f"{path}:3"),
        ("c", "", "Text C", {}, f"{path}:4"),
    ]


def test_bad_jsonl_lines_are_reported_by_line_and_the_rest_is_kept(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "c.jsonl",
        {"id": "ok1", "text": "fine"},
        "{not json",
        "[1, 2]",
        {"text": "no id"},
        {"id": True, "text": "bool id"},
        {"id": "  ", "text": "blank id"},
        {"id": "x"},
        {"id": "y", "text": 5},
        {"id": "z", "text": " \n "},
        {"id": "t", "text": "t", "title": ["list"]},
        {"id": "m", "text": "m", "metadata": [1]},
        '{"id": "n", "text": "n", "metadata": {"score": NaN}}',
        '{"id": "i", "text": "i", "metadata": {"score": 1e999}}',
        {"id": "ok1", "text": "duplicate"},
        {"id": "ok2", "text": "also fine"},
    )
    items = _read(path)
    assert [d.doc_id for d in _docs(items)] == ["ok1", "ok2"]
    reasons = {p.source.rsplit(":", 1)[1]: p.reason for p in _problems(items)}
    assert reasons["2"].startswith("line 2: invalid JSON: ")
    assert reasons["3"] == "line 3: expected a JSON object, got an array"
    assert reasons["4"] == "line 4: missing 'id'"
    assert reasons["5"] == "line 5: 'id' must be a string or an integer, got a boolean"
    assert reasons["6"] == "line 6: empty 'id'"
    assert reasons["7"] == "line 7: missing 'text'"
    assert reasons["8"] == "line 8: 'text' must be a string, got a number"
    assert reasons["9"] == "line 9: empty 'text'"
    assert reasons["10"] == "line 10: 'title' must be a string, got an array"
    assert reasons["11"] == "line 11: 'metadata' must be an object, got an array"
    assert reasons["12"] == "line 12: invalid JSON: NaN is not allowed"
    assert reasons["13"].startswith("line 13: invalid JSON: number 1e999 is out of range")
    assert reasons["14"] == f"duplicate document id 'ok1', first seen in {path}:1"
    assert len(reasons) == 13


def test_jsonl_encoding_problems_are_per_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", b'\xef\xbb\xbf{"id": "a", "text": "A"}\n{"id": "b", "text": "\xff"}\n')
    items = _read(path)
    assert [d.doc_id for d in _docs(items)] == ["a"]
    assert _problems(items) == [IngestProblem(f"{path}:2", "line 2: not valid UTF-8 at byte 49")]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"\n  \n", "empty file (no records, only blank lines)"),
        (b'{"a"\x00}', "binary file (NUL bytes)"),
    ],
)
def test_jsonl_file_problems(tmp_path: Path, content: bytes, reason: str) -> None:
    assert _one_problem(_write(tmp_path / "c.jsonl", content)).reason == reason


# --- identity -------------------------------------------------------------------------


def test_content_hash_covers_title_text_and_metadata(tmp_path: Path) -> None:
    base = {"id": "a", "title": "T", "text": "Body", "metadata": {"b": 1, "a": "é"}}
    variants = [base, {**base, "title": "T2"}, {**base, "text": "Body2"}, {**base, "metadata": {"b": 2, "a": "é"}}]
    path = _jsonl(tmp_path / "c.jsonl", *({**v, "id": f"v{i}"} for i, v in enumerate(variants)))
    docs = _docs(_read(path))
    expected = hashlib.sha256('T\0Body\0{"a":"é","b":1}'.encode()).hexdigest()
    assert docs[0].content_hash == expected
    assert len({d.content_hash for d in docs}) == 4
    # Reading again gives the same hash; key order in the file does not matter.
    reordered = _jsonl(tmp_path / "d.jsonl", {"metadata": {"a": "é", "b": 1}, "text": "Body", "title": "T", "id": "x"})
    assert _docs(_read(reordered))[0].content_hash == expected


def test_documents_are_frozen_and_hashable(tmp_path: Path) -> None:
    doc = _one_doc(_write(tmp_path / "a.txt", "alpha"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.text = "changed"  # type: ignore[misc]
    assert doc in {doc}


# --- packaged sample corpus --------------------------------------------------------------


def test_sample_corpus_reads_cleanly() -> None:
    root = sample_data_dir()
    assert root.is_dir()
    items = _read(root)
    assert _problems(items) == []
    docs = _docs(items)
    assert 12 <= len(docs) <= 20
    assert {d.metadata.get("format") for d in docs} >= {"md", "txt"}
    records = [d for d in docs if ".jsonl:" in d.source]
    assert len(records) >= 3
    assert all(d.metadata.get("specialty") and d.title for d in records)
    assert all(d.title for d in docs)
    for doc in docs:
        assert 150 <= len(doc.text.split()) <= 400, doc.doc_id
        assert chunk_text(doc.text, max_chars=1000, overlap_chars=150)
    with_pii = [d for d in docs if "jane.doe@example.org" in d.text]
    assert len(with_pii) == 1
    for marker in ["+44 20 7946 0958", "MRN: 00123456", "DOB: 12/03/1985"]:
        assert marker in with_pii[0].text
    assert sorted(p.name for p in root.iterdir()) == sorted(
        p.name for p in root.iterdir() if p.suffix in SUPPORTED_SUFFIXES and not p.name.startswith(".")
    )
