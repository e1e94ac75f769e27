"""Read a silo's source files into documents, reporting every file or line that cannot be used.

``iter_documents`` walks files and directories and yields a ``SourceDocument`` for each usable
document and an ``IngestProblem`` for each file, JSONL line or OBO stanza it had to leave out
(OBO files are read by ``silo_node.ingest.obo``). One bad file or line never stops the rest;
nothing is guessed silently (a file that is not UTF-8 is reported, not decoded some other way).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from silo_node.ingest._formats import PARSERS, clean_title, normalise_text

__all__ = ["SUPPORTED_SUFFIXES", "IngestProblem", "SourceDocument", "iter_documents"]

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({*PARSERS, ".jsonl", ".obo"})
"""File suffixes ``iter_documents`` reads (compared case-insensitively)."""

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class SourceDocument:
    """One document read from a silo's sources, before chunking.

    Attributes:
        doc_id: Files: the path relative to the directory it was found under (POSIX separators),
            or the file name for a file given directly. JSONL: the record's ``id``. OBO: the term id.
        title: The document's title (at most 200 characters; may be empty for JSONL records).
        text: The normalised text (NFC, ``LF`` line ends, no trailing spaces, single blank
            lines between paragraphs); for HTML the visible text only.
        metadata: JSONL: the record's ``metadata`` object. OBO: ``{"ontology", "format"}``.
            Other files: ``{"format"}``.
        source: The file it came from; ``path:lineno`` for a JSONL record or an OBO term.
        content_hash: SHA-256 (hex) of ``title``, ``text`` and canonical JSON of ``metadata``.
    """

    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(hash=False)
    source: str
    content_hash: str


@dataclass(frozen=True)
class IngestProblem:
    """A file or JSONL line that was left out, and why, in words a silo operator can act on.

    Attributes:
        source: The path, or ``path:lineno`` for a JSONL line.
        reason: One line, e.g. ``"empty file"`` or ``"line 7: invalid JSON: ..."``.
    """

    source: str
    reason: str


def iter_documents(paths: Sequence[Path], *, max_file_bytes: int) -> Iterator[SourceDocument | IngestProblem]:
    """Yield the documents found under ``paths``, and a problem for everything left out.

    Directories are walked recursively in sorted order, skipping hidden files and directories
    (names starting with ``.``) and, silently, files whose suffix is not in
    ``SUPPORTED_SUFFIXES``. A path that does not exist, or a file named explicitly with an
    unsupported suffix, is a problem. Files are checked against ``max_file_bytes`` before they
    are read. Text must be UTF-8 (a leading byte order mark is dropped). A document id seen
    before (within one JSONL file or across inputs) is a problem; the first document is kept.
    The same file reached twice (through two inputs or a symbolic link) is read once.

    Args:
        paths: Files and directories, in the order they should be read.
        max_file_bytes: Largest file accepted (``chunking.max_file_bytes``).

    Yields:
        A ``SourceDocument`` per usable document, an ``IngestProblem`` per file or line left out.
    """
    first_source: dict[str, str] = {}
    files_read: set[Path] = set()
    documents = problems = 0
    for root in paths:
        for doc_id, file in _walk(Path(root)):
            if isinstance(file, IngestProblem):
                problems += 1
                yield file
                continue
            items = _read_file(file, doc_id, max_file_bytes, files_read)
            for item in items:
                if isinstance(item, SourceDocument) and item.doc_id in first_source:
                    item = IngestProblem(
                        item.source, f"duplicate document id {item.doc_id!r}, first seen in {first_source[item.doc_id]}"
                    )
                if isinstance(item, SourceDocument):
                    first_source[item.doc_id] = item.source
                    documents += 1
                else:
                    logger.debug("left out %s: %s", item.source, item.reason)
                    problems += 1
                yield item
    logger.debug("read %d documents, left out %d items", documents, problems)


def _walk(root: Path) -> Iterator[tuple[str, Path | IngestProblem]]:
    """Yield ``(doc_id, file)`` for ``root`` itself or each candidate file under it, or a problem."""
    try:
        is_dir = root.is_dir()
        exists = is_dir or root.exists()
    except OSError as exc:
        yield "", IngestProblem(str(root), f"cannot open: {exc.strerror or exc}")
        return
    if not exists:
        yield "", IngestProblem(str(root), "no such file or directory")
    elif is_dir:
        yield from _walk_directory(root, root, set())
    else:
        yield root.name, root


def _walk_directory(
    root: Path, directory: Path, visited: set[tuple[int, int]]
) -> Iterator[tuple[str, Path | IngestProblem]]:
    """Depth first in name order, so files come out sorted by their path relative to ``root``."""
    try:
        info = directory.stat()
        if (info.st_dev, info.st_ino) in visited:
            return  # A symbolic link loop.
        visited.add((info.st_dev, info.st_ino))
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        yield "", IngestProblem(str(directory), f"cannot list directory: {exc.strerror or exc}")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
            wanted = not is_dir and entry.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES
        except OSError as exc:
            yield "", IngestProblem(str(path), f"cannot open: {exc.strerror or exc}")
            continue
        if is_dir:
            yield from _walk_directory(root, path, visited)
        elif wanted:
            yield path.relative_to(root).as_posix(), path


def _read_file(
    path: Path, doc_id: str, max_file_bytes: int, files_read: set[Path]
) -> Iterator[SourceDocument | IngestProblem]:
    """Read one file into documents (several for JSONL), or report why it cannot be read."""
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        what = f"unsupported file type {suffix}" if suffix else "unsupported file type (no suffix)"
        yield IngestProblem(source, f"{what}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
        return
    try:
        real = path.resolve()
        if real in files_read:
            logger.debug("skipping %s: already read", source)
            return
        files_read.add(real)
        if not stat.S_ISREG(path.stat().st_mode):  # Never open a FIFO or a device: it may block.
            yield IngestProblem(source, "not a regular file")
            return
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_size > max_file_bytes:
                yield IngestProblem(source, _too_big(info.st_size, max_file_bytes))
                return
            if suffix == ".jsonl":
                yield from _read_jsonl(handle, source, max_file_bytes)
                return
            if suffix == ".obo":
                from silo_node.ingest.obo import read_obo  # Here, not at the top: obo imports this module.

                yield from read_obo(handle, source, max_file_bytes)
                return
            data = handle.read(max_file_bytes + 1)
    except OSError as exc:
        yield IngestProblem(source, f"cannot read: {exc.strerror or exc}")
        return
    if len(data) > max_file_bytes:
        yield IngestProblem(source, _grew(max_file_bytes))
        return
    problem = _sniff(data)
    if problem:
        yield IngestProblem(source, problem)
        return
    offset = len(_BOM) if data.startswith(_BOM) else 0
    try:
        raw = data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        yield IngestProblem(source, f"not valid UTF-8 at byte {exc.start + offset}")
        return
    fmt, parse = PARSERS[suffix]
    title, text = parse(raw)
    if not text:
        what = "no visible text" if fmt == "html" else "whitespace only"
        yield IngestProblem(source, f"empty file ({what})")
        return
    yield make_document(doc_id, title, text, {"format": fmt}, source=source)


def _read_jsonl(handle: BinaryIO, path: str, max_file_bytes: int) -> Iterator[SourceDocument | IngestProblem]:
    """Read a JSONL file line by line: one document per line, a problem per bad line."""
    head = handle.read(_SNIFF_BYTES)
    problem = _sniff(head)
    if problem:
        yield IngestProblem(path, problem)
        return
    handle.seek(0)
    offset = 0
    records = 0
    unknown_keys: set[str] = set()
    for lineno, line in enumerate(handle, start=1):
        start = offset
        offset += len(line)
        if offset > max_file_bytes:
            yield IngestProblem(path, _grew(max_file_bytes))
            return
        if lineno == 1 and line.startswith(_BOM):
            line, start = line[len(_BOM) :], start + len(_BOM)
        if not line.strip():
            continue
        records += 1
        source = f"{path}:{lineno}"
        try:
            text_line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield IngestProblem(source, f"line {lineno}: not valid UTF-8 at byte {start + exc.start}")
            continue
        yield _jsonl_record(text_line, lineno, source, unknown_keys)
    if records == 0:
        yield IngestProblem(path, "empty file (no records, only blank lines)")
    if unknown_keys:
        logger.warning("%s: ignored unknown keys %s (known: id, title, text, metadata)", path, sorted(unknown_keys))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal} is out of range")
    return value


def _jsonl_record(line: str, lineno: int, source: str, unknown_keys: set[str]) -> SourceDocument | IngestProblem:
    """Turn one JSONL line into a document, or a problem naming the line and what is wrong."""

    def problem(reason: str) -> IngestProblem:
        return IngestProblem(source, f"line {lineno}: {reason}")

    try:
        record = json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError.
        return problem(f"invalid JSON: {exc}")
    if not isinstance(record, dict):
        return problem(f"expected a JSON object, got {_json_type(record)}")
    unknown_keys.update(set(record) - {"id", "title", "text", "metadata"})
    if "id" not in record:
        return problem("missing 'id'")
    doc_id = record["id"]
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        return problem(f"'id' must be a string or an integer, got {_json_type(doc_id)}")
    doc_id = str(doc_id)
    if not doc_id.strip():
        return problem("empty 'id'")
    if "text" not in record:
        return problem("missing 'text'")
    if not isinstance(record["text"], str):
        return problem(f"'text' must be a string, got {_json_type(record['text'])}")
    text = normalise_text(record["text"])
    if not text:
        return problem("empty 'text'")
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        return problem(f"'title' must be a string, got {_json_type(title)}")
    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return problem(f"'metadata' must be an object, got {_json_type(metadata)}")
    return make_document(doc_id, clean_title(title or ""), text, metadata or {}, source=source)


def make_document(doc_id: str, title: str, text: str, metadata: dict[str, Any], *, source: str) -> SourceDocument:
    """Build a document (and its content hash) from parts, e.g. a document sent to the operator API.

    The hash covers title, text and metadata, not where the document came from, so moving
    the files or naming them by another path does not re-embed anything.
    """
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{title}\0{text}\0{canonical}".encode()).hexdigest()
    return SourceDocument(doc_id, title, text, metadata, source, digest)


def _sniff(data: bytes) -> str:
    """Return why ``data`` is not text we read, or ``""``."""
    if not data:
        return "empty file"
    if data.startswith(_UTF16_BOMS):
        return "UTF-16 text (byte order mark); save the file as UTF-8"
    if b"\0" in data:
        return "binary file (NUL bytes)"
    return ""


def _too_big(size: int, limit: int) -> str:
    return f"file is {_human(size)}, over the {_human(limit)} limit (chunking.max_file_bytes)"


def _grew(limit: int) -> str:
    return f"file grew past the {_human(limit)} limit (chunking.max_file_bytes) while it was read"


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
