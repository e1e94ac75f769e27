"""Bring your own evaluation: a user's corpus and questions as a suite (``fedrag eval run --corpus``).

The corpus is either

- a directory with one folder per silo, each read as ``fedrag silo ingest`` reads a folder
  (Markdown, text, HTML, JSONL, OBO ...; a file's id is its path inside the silo's folder, a
  JSONL record's its ``id``), or
- a JSONL file of records ``{"id", "title", "text", "metadata", "<silo field>"}``, the silo named
  by a top-level field (``--silo-field``, default ``silo``) or the same key in ``metadata``.

The questions are a JSONL file of ``{"id", "question", "gold"}`` records: ``gold`` is the id (or
list of ids) of the documents that answer it, ``id`` is optional (``q<line>``). Every document is
ingested (no sampling) into its own silo; ``--limit`` draws a seeded sample of the questions.
Anything that cannot be read is an error that names the file and line, never a silently smaller
corpus.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from eval.datasets import RetrievalQuestion
from eval.datasets._sources import seeded_sample
from eval.suites import Suite, SuiteData
from federation.config import ChunkingSettings
from federation.errors import ConfigError
from federation.membership import NAME_PATTERN
from silo_node.ingest.readers import SourceDocument, iter_documents

__all__ = ["OWN_SUITE", "load_own_suite", "own_corpus_digest"]

OWN_SUITE = "own"
DATASET = "own"
_SHOWN = 5  # problems named in an error


def _fail(what: str, problems: Sequence[str]) -> ConfigError:
    more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
    return ConfigError(f"{what}: {'; '.join(problems[:_SHOWN])}{more}")


def _check_silo(name: Any, where: str) -> str:
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        raise ConfigError(
            f"{where}: silo name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _in_silo(document: SourceDocument, silo: str) -> SourceDocument:
    # The natural partition puts a document in the silo its metadata's ``corpus`` names.
    return replace(document, metadata={**document.metadata, "corpus": silo})


def _read(paths: Sequence[Path], what: str) -> list[SourceDocument]:
    documents: list[SourceDocument] = []
    problems: list[str] = []
    for item in iter_documents(paths, max_file_bytes=ChunkingSettings().max_file_bytes):
        if isinstance(item, SourceDocument):
            documents.append(item)
        else:
            problems.append(f"{item.source}: {item.reason}")
    if problems:
        raise _fail(f"cannot read {what}", problems)
    return documents


def _directory_corpus(root: Path) -> list[SourceDocument]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if loose:
        raise _fail(f"{root}: every document must be in a silo's folder, found files at the top", loose)
    if not folders:
        raise ConfigError(f"{root} has no silo folders: make one folder per silo, holding its documents")
    documents: list[SourceDocument] = []
    for folder in folders:
        silo = _check_silo(folder.name, str(folder))
        found = _read([folder], f"silo folder {folder}")
        if not found:
            raise ConfigError(f"silo folder {folder} holds no document fedrag reads (Markdown, text, HTML, JSONL ...)")
        documents += [_in_silo(d, silo) for d in found]
    return documents


def _jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSONL file's objects; an unreadable line is an error naming it."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{lineno}: invalid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise ConfigError(f"{path}:{lineno}: expected a JSON object")
        yield lineno, record


def _jsonl_corpus(path: Path, silo_field: str) -> list[SourceDocument]:
    silos: dict[str, str] = {}
    missing: list[str] = []
    for lineno, record in _jsonl_lines(path):
        metadata = record.get("metadata")
        silo = record.get(silo_field, metadata.get(silo_field) if isinstance(metadata, dict) else None)
        if silo is None:
            missing.append(f"line {lineno}")
            continue
        silos[str(record.get("id"))] = _check_silo(silo, f"{path}:{lineno}")
    if missing:
        raise _fail(f"{path}: records without a '{silo_field}' field naming their silo (--silo-field)", missing)
    return [_in_silo(d, silos[d.doc_id]) for d in _read([path], str(path))]


def load_own_corpus(path: Path, *, silo_field: str = "silo") -> list[SourceDocument]:
    """The documents of a corpus directory or JSONL file, each with its silo (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        documents = _directory_corpus(path)
    elif path.is_file():
        documents = _jsonl_corpus(path, silo_field)
    else:
        raise ConfigError(f"--corpus {path} does not exist")
    if not documents:
        raise ConfigError(f"{path} holds no documents")
    twice = [f"{doc_id!r}" for doc_id, n in Counter(d.doc_id for d in documents).items() if n > 1]
    if twice:
        raise _fail(f"{path}: document ids must be unique across silos (questions name them)", twice)
    return documents


def load_own_questions(path: Path, documents: Sequence[SourceDocument]) -> list[RetrievalQuestion]:
    """The questions of a JSONL file, each with gold document ids the corpus holds."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--questions {path} does not exist")
    silo_of = {d.doc_id: str(d.metadata["corpus"]) for d in documents}
    questions: list[RetrievalQuestion] = []
    problems: list[str] = []
    seen: set[str] = set()
    for lineno, record in _jsonl_lines(path):
        question, gold = record.get("question"), record.get("gold")
        gold_ids = [gold] if isinstance(gold, str | int) and not isinstance(gold, bool) else gold
        qid = str(record.get("id", f"q{lineno}"))
        if not isinstance(question, str) or not question.strip():
            problems.append(f"line {lineno}: needs a 'question' string")
        elif not isinstance(gold_ids, list) or not gold_ids:
            problems.append(f"line {lineno}: needs 'gold', the id (or list of ids) of the documents that answer it")
        elif unknown := [str(g) for g in gold_ids if str(g) not in silo_of]:
            problems.append(f"line {lineno}: gold document(s) {', '.join(map(repr, unknown))} are not in the corpus")
        elif qid in seen:
            problems.append(f"line {lineno}: question id {qid!r} given twice")
        else:
            seen.add(qid)
            ids = frozenset(str(g) for g in gold_ids)
            questions.append(RetrievalQuestion(qid, question.strip(), ids, silo_of[min(ids)], DATASET))
    if problems:
        raise _fail(f"cannot use the questions in {path}", problems)
    if not questions:
        raise ConfigError(f"{path} holds no questions")
    return questions


def own_corpus_digest(*paths: Path) -> str:
    """A hash of the files under ``paths`` (names and contents): a resumed run must read the same."""
    digest = hashlib.sha256()
    for root in map(Path, paths):
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            name = file.relative_to(root).as_posix() if root.is_dir() else file.name
            try:
                digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
            except OSError as exc:
                raise ConfigError(f"cannot read {file}: {exc}") from exc
    return "sha256:" + digest.hexdigest()


def load_own_suite(
    corpus: Path, questions: Path, *, silo_field: str = "silo", retrieval_limit: int, seed: int
) -> SuiteData:
    """The suite of a user's corpus and questions: every document, ``retrieval_limit`` questions (seeded)."""
    documents = load_own_corpus(corpus, silo_field=silo_field)
    asked = load_own_questions(questions, documents)
    silos = tuple(sorted({str(d.metadata["corpus"]) for d in documents}))
    suite = Suite(OWN_SUITE, silos, lambda *_: [], lambda *_: [])
    return SuiteData(suite, documents, seeded_sample(asked, retrieval_limit, seed), [], [])
