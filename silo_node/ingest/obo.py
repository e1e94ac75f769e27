r"""Read OBO 1.2/1.4 ontology files (e.g. the Human Phenotype Ontology ``hp.obo``) into documents.

Each ``[Term]`` stanza that is not obsolete and has a definition or synonyms becomes one
``SourceDocument``: the term id is the document id, ``name`` the title, and the text is the name,
the ``def:`` text (unquoted, without its ``[xrefs]``) and a ``Synonyms: a; b`` line. Terms with a
name only carry nothing to retrieve and are left out silently; ``[Typedef]`` and ``[Instance]``
stanzas are ignored. The file is read line by line; a malformed ``[Term]`` stanza is reported as
an ``IngestProblem`` (``path:lineno``) and the rest of the file is still read.

Supported syntax: ``tag: value`` lines, ``!`` comments, trailing ``{modifiers}``, backslash
escapes (``\"``, ``\\``, ``\n``, ``\t``, ``\W``, ``\:`` ...), a backslash at the end of a
line continuing it on the next, and the OBO 1.0 ``exact_synonym:`` style tags.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from silo_node.ingest._formats import clean_title, normalise_text
from silo_node.ingest.readers import _BOM, _SNIFF_BYTES, IngestProblem, SourceDocument, _grew, _sniff, make_document

__all__ = ["read_obo"]

_ESCAPES = {"n": "\n", "t": "\t", "W": " "}
_SYNONYM_TAGS = frozenset({"synonym", "exact_synonym", "narrow_synonym", "broad_synonym", "related_synonym"})
_SINGLE_TAGS = ("id", "name", "def", "is_obsolete")


class _MalformedError(ValueError):
    """A tag value that does not follow the OBO syntax."""


@dataclass
class _Stanza:
    """The lines of one ``[...]`` stanza, as ``(lineno, tag, raw value)``."""

    kind: str
    lineno: int
    tags: list[tuple[int, str, str]] = field(default_factory=list)
    error: tuple[int, str] | None = None


def read_obo(handle: BinaryIO, path: str, max_file_bytes: int) -> Iterator[SourceDocument | IngestProblem]:
    """Read an OBO file line by line: a document per usable term, a problem per malformed stanza.

    Args:
        handle: The file, opened in binary mode at its start.
        path: The file's path, for ``source`` and problem reports.
        max_file_bytes: Largest file accepted; a file that grows past it while read is a problem.

    Yields:
        A ``SourceDocument`` per non-obsolete term with a definition or synonyms (``source`` is
        ``path:lineno`` of its ``[Term]`` line), an ``IngestProblem`` per stanza or line left out.
    """
    problem = _sniff(handle.read(_SNIFF_BYTES))
    if problem:
        yield IngestProblem(path, problem)
        return
    handle.seek(0)
    ontology = ""
    stanza: _Stanza | None = None
    documents = 0
    for lineno, line, error in _logical_lines(handle, max_file_bytes):
        if error == "grew":
            yield IngestProblem(path, _grew(max_file_bytes))
            return
        if error:
            if stanza is not None and stanza.kind == "Term":
                stanza.error = stanza.error or (lineno, error)
            else:
                yield IngestProblem(f"{path}:{lineno}", f"line {lineno}: {error}")
            continue
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            item = _term(stanza, path, ontology or Path(path).stem)
            documents += isinstance(item, SourceDocument)
            if item is not None:
                yield item
            stanza = _Stanza(stripped[1:-1].strip(), lineno)
            continue
        if not stripped or stripped.startswith("!"):
            continue
        tag, sep, value = stripped.partition(":")
        tag = tag.strip()
        if stanza is None:
            if sep and tag == "ontology":
                ontology = _unquoted(value)
        elif not sep or not tag:
            stanza.error = stanza.error or (lineno, f"expected 'tag: value', got {stripped[:60]!r}")
        else:
            stanza.tags.append((lineno, tag, value.strip()))
    item = _term(stanza, path, ontology or Path(path).stem)
    documents += isinstance(item, SourceDocument)
    if item is not None:
        yield item
    if documents == 0:
        yield IngestProblem(path, "empty ontology (no non-obsolete [Term] with a definition or synonyms)")


def _logical_lines(handle: BinaryIO, max_file_bytes: int) -> Iterator[tuple[int, str, str]]:
    """Yield ``(lineno, line, error)``: decoded lines with backslash continuations joined.

    ``lineno`` is the line the logical line starts on. ``error`` is ``""``, a reason for a line
    that is not UTF-8 (its text is then empty), or ``"grew"`` when the file passed the limit.
    """
    offset = 0
    pending = ""
    start = 0
    for lineno, raw in enumerate(handle, start=1):
        begin = offset
        offset += len(raw)
        if offset > max_file_bytes:
            yield lineno, "", "grew"
            return
        if lineno == 1 and raw.startswith(_BOM):
            raw, begin = raw[len(_BOM) :], begin + len(_BOM)
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            pending = ""
            yield lineno, "", f"not valid UTF-8 at byte {begin + exc.start}"
            continue
        if not pending:
            start = lineno
        trailing = len(text) - len(text.rstrip("\\"))
        if trailing % 2 == 1:  # An unescaped backslash at the end: the line goes on.
            pending += text[:-1]
            continue
        yield start, pending + text, ""
        pending = ""
    if pending:
        yield start, pending, ""


def _term(stanza: _Stanza | None, path: str, ontology: str) -> SourceDocument | IngestProblem | None:
    """Turn a ``[Term]`` stanza into a document, a problem, or ``None`` (not a term, or left out)."""
    if stanza is None or stanza.kind != "Term":
        return None
    single: dict[str, tuple[int, str]] = {}
    repeated: tuple[int, str] | None = None
    synonym_lines: list[tuple[int, str, str]] = []
    for lineno, tag, value in stanza.tags:
        if tag in _SINGLE_TAGS:
            if tag in single and repeated is None:
                repeated = (lineno, tag)
            single.setdefault(tag, (lineno, value))
        elif tag in _SYNONYM_TAGS:
            synonym_lines.append((lineno, tag, value))
    if "is_obsolete" in single and _unquoted(single["is_obsolete"][1]).lower() == "true":
        return None
    term_id = _unquoted(single["id"][1]) if "id" in single else ""
    try:
        if stanza.error:
            raise _MalformedError(f"line {stanza.error[0]}: {stanza.error[1]}")
        if repeated:
            raise _MalformedError(f"line {repeated[0]}: more than one '{repeated[1]}'")
        if not term_id:
            raise _MalformedError("missing 'id'" if "id" not in single else f"line {single['id'][0]}: empty 'id'")
        name = clean_title(_unquoted(single["name"][1])) if "name" in single else ""
        if not name:
            raise _MalformedError("missing 'name'" if "name" not in single else "empty 'name'")
        definition = _quoted(single["def"][1], single["def"][0], "def").strip() if "def" in single else ""
        synonyms = [" ".join(_quoted(value, lineno, tag).split()) for lineno, tag, value in synonym_lines]
    except _MalformedError as exc:
        where = f"[Term] {term_id}" if term_id else f"[Term] at line {stanza.lineno}"
        return IngestProblem(f"{path}:{stanza.lineno}", f"{where}: {exc}")
    seen = {name.casefold()}
    unique: list[str] = []
    for synonym in synonyms:
        if synonym and synonym.casefold() not in seen:
            seen.add(synonym.casefold())
            unique.append(synonym)
    if not definition and not unique:
        return None
    text = name if name.endswith(".") else f"{name}."
    if definition:
        text += f" {definition}"
    if unique:
        text += "\nSynonyms: " + "; ".join(unique)
    metadata = {"ontology": ontology, "format": "obo"}
    return make_document(term_id, name, normalise_text(text), metadata, source=f"{path}:{stanza.lineno}")


def _quoted(value: str, lineno: int, tag: str) -> str:
    """Return the unescaped quoted string at the start of ``value`` (what follows is dropped)."""
    if not value.startswith('"'):
        raise _MalformedError(f"line {lineno}: '{tag}' must start with a quoted string")
    end = value.find('"', 1)
    if end != -1 and "\\" not in value[1:end]:  # the common case: nothing escaped
        return value[1:end]
    out: list[str] = []
    i = 1
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            out.append(_ESCAPES.get(value[i + 1], value[i + 1]))
            i += 2
            continue
        if char == '"':
            return "".join(out)
        out.append(char)
        i += 1
    raise _MalformedError(f"line {lineno}: '{tag}' has no closing quote")


def _unquoted(value: str) -> str:
    """Unescape an unquoted value, dropping a ``! comment`` and trailing ``{modifiers}``."""
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            out.append(_ESCAPES.get(value[i + 1], value[i + 1]))
            i += 2
            continue
        if char == "!":
            break
        out.append(char)
        i += 1
    text = "".join(out).strip()
    if text.endswith("}") and " {" in text:
        text = text[: text.rindex(" {")].rstrip()
    return text
