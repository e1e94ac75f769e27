"""MIRAGE, the medical RAG benchmark (Xiong et al., 2024): its ``benchmark.json``, which users bring.

The file (from github.com/Teddy-XiongGZ/MIRAGE) maps each task to its questions by key::

    {"medqa": {"0000": {"question": "...", "options": {"A": "...", "B": "..."}, "answer": "B"}, ...},
     "medmcqa": {...}, "pubmedqa": {...}, "bioasq": {...}, "mmlu": {"anatomy-0": {...}, ...}}

PubMedQA* options are yes / no / maybe and BioASQ-Y/N's yes / no; other fields of a question are
ignored. A question becomes a ``MultipleChoiceQuestion`` with id ``mirage/<task>:<key>``, dataset
``mirage/<task>`` (the unit MIRAGE reports accuracy for) and subject the MMLU subject for the
``mmlu`` task (``anatomy-0`` is about ``anatomy``), else the task.

A question that breaks the shape (no text, options that are not the letters A, B, C ... in
order, an answer that is not one of them) is left out with a warning naming its task and key;
a file that is not JSON of this shape is a ``ConfigError``.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eval.datasets.base import MultipleChoiceQuestion
from federation.errors import ConfigError

__all__ = ["MIRAGE_DATASETS", "load_mirage"]

logger = logging.getLogger(__name__)

MIRAGE_DATASETS: tuple[str, ...] = ("medqa", "medmcqa", "pubmedqa", "bioasq", "mmlu")
"""MIRAGE's five tasks, in the order of its paper and file."""


def load_mirage(path: Path | str, datasets: Iterable[str] | None = None) -> list[MultipleChoiceQuestion]:
    """Read MIRAGE questions from ``benchmark.json``.

    Args:
        path: The ``benchmark.json`` file.
        datasets: The tasks to read (``MIRAGE_DATASETS`` names); ``None`` reads every task in the file.

    Returns:
        The questions, task by task in file order, each task's in file order.

    Raises:
        ConfigError: If the file is missing, not JSON, not an object of tasks, or lacks a task asked for.
    """
    source = Path(path)
    try:
        benchmark = json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read MIRAGE file {source}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"MIRAGE file {source} is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}: not JSON: {exc.msg}") from exc
    if not isinstance(benchmark, dict) or not all(isinstance(task, dict) for task in benchmark.values()):
        raise ConfigError(f"{source}: not a MIRAGE benchmark (an object of tasks, each an object of questions)")
    tasks = list(benchmark) if datasets is None else list(dict.fromkeys(datasets))
    unknown = [task for task in tasks if task not in benchmark]
    if unknown:
        raise ConfigError(f"{source} has no task {', '.join(unknown)}; it has: {', '.join(benchmark)}")
    questions: list[MultipleChoiceQuestion] = []
    for task in tasks:
        for key, entry in benchmark[task].items():
            try:
                questions.append(_question(task, key, entry))
            except ValueError as exc:
                logger.warning("mirage: left out %s %s/%s: %s", source, task, key, exc)
    logger.info("mirage: %d questions from %s (%s)", len(questions), source, ", ".join(tasks))
    return questions


def _question(task: str, key: str, entry: Any) -> MultipleChoiceQuestion:
    """One question; ``ValueError`` saying what is wrong with it."""
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    question, options, answer = entry.get("question"), entry.get("options"), entry.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no question text")
    if not isinstance(options, dict) or not all(isinstance(text, str) for text in options.values()):
        raise ValueError("'options' is not an object of texts")
    letters = sorted(options)
    if letters != list(string.ascii_uppercase[: len(letters)]):
        raise ValueError(f"options {', '.join(letters)} are not the letters A, B, C ... in order")
    if answer not in options:
        raise ValueError(f"answer {answer!r} is not one of the options {', '.join(letters)}")
    subject = key.rpartition("-")[0] if task == "mmlu" and "-" in key else task
    return MultipleChoiceQuestion(
        id=f"mirage/{task}:{key}",
        question=question.strip(),
        choices=tuple(options[letter].strip() for letter in letters),
        answer=letters.index(answer),
        subject=subject,
        dataset=f"mirage/{task}",
    )
