"""The question types the evaluation harness asks: multiple choice, retrieval with gold documents, code.

Every loader in ``eval.datasets`` returns these frozen values. Their invariants are checked on
construction (``ValueError``); the loaders turn a record that breaks them into a logged warning
naming its file and line, or key, and leave it out.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

__all__ = ["CodeProblem", "MultipleChoiceQuestion", "RetrievalQuestion"]

_LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class MultipleChoiceQuestion:
    """A question with lettered choices, one of them right.

    Attributes:
        id: Unique within its dataset and stable across loads (``mmlu:anatomy-12``, ``mirage/medqa:0003``).
        question: The question text, without the choices.
        choices: The choices in order; choice ``i`` is shown as letter ``"ABCD..."[i]``.
        answer: The index in ``choices`` of the right choice.
        subject: What it is about (an MMLU subject such as ``clinical_knowledge``, or a MIRAGE task).
        dataset: Where it comes from (``mmlu``, ``mirage/medqa`` ...).
    """

    id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str
    dataset: str

    def __post_init__(self) -> None:
        if not self.id or not self.question.strip():
            raise ValueError("a multiple-choice question needs an id and a question")
        if not 2 <= len(self.choices) <= len(_LETTERS):
            raise ValueError(f"{self.id}: {len(self.choices)} choices; 2 to {len(_LETTERS)} are needed")
        if not 0 <= self.answer < len(self.choices):
            raise ValueError(f"{self.id}: answer index {self.answer} is not one of the {len(self.choices)} choices")

    @property
    def answer_letter(self) -> str:
        """The letter of the right choice (``"A"`` for index 0)."""
        return _LETTERS[self.answer]


@dataclass(frozen=True)
class RetrievalQuestion:
    """A question whose answer is in known documents of a packaged corpus.

    Attributes:
        id: Unique within its dataset and stable across loads.
        question: The question text.
        gold_doc_ids: Ids of the documents that answer it, as ``silo_node.corpora.load_corpus(corpus)``
            yields them (``SourceDocument.doc_id``); never empty.
        corpus: The ``silo_node.corpora.CORPORA`` name the gold documents belong to.
        dataset: Where it comes from (``ontology-qa``, ``python-faq``).
    """

    id: str
    question: str
    gold_doc_ids: frozenset[str]
    corpus: str
    dataset: str

    def __post_init__(self) -> None:
        if not self.id or not self.question.strip():
            raise ValueError("a retrieval question needs an id and a question")
        if not self.gold_doc_ids:
            raise ValueError(f"{self.id}: a retrieval question needs at least one gold document id")


@dataclass(frozen=True)
class CodeProblem:
    """A function to complete, checked by running its tests (HumanEval's fields).

    Attributes:
        id: The task id (``HumanEval/0``).
        prompt: The function's signature and docstring, which the completion continues.
        entry_point: The name of the function the tests call.
        test: Python source defining ``check(candidate)``.
        canonical_solution: A body that passes the tests (appended to ``prompt``).
        dataset: Where it comes from (``humaneval``).
    """

    id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str
    dataset: str

    def __post_init__(self) -> None:
        if not self.id or not self.prompt.strip() or not self.test.strip():
            raise ValueError("a code problem needs an id, a prompt and a test")
        if not self.entry_point.isidentifier():
            raise ValueError(f"{self.id}: entry point {self.entry_point!r} is not a Python identifier")
