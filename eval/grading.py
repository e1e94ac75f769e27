"""Multiple-choice and code questions: how they are put to the LLM and how the answers are graded.

Multiple choice (MMLU): the question with its lettered options; graded by the letter the
answer chose, an answer without one counted unparseable (and wrong). Code (HumanEval): the
function's signature and docstring to complete; graded by running its tests in the sandbox
(:mod:`eval.sandbox`), never in the harness.
"""

from __future__ import annotations

from typing import Any

from eval.datasets import CodeProblem, MultipleChoiceQuestion
from eval.sandbox import extract_completion, humaneval_program, run_code_check

__all__ = ["CODE_INSTRUCTION", "LETTERS", "grade", "pose"]

LETTERS = "ABCDEFGHIJ"
CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, "
    "including its signature, in one ```python code block."
)


def pose(q: MultipleChoiceQuestion | CodeProblem) -> tuple[str, list[str] | None]:
    """The question text and (multiple choice) the options the LLM is asked."""
    if isinstance(q, MultipleChoiceQuestion):
        return q.question, list(q.choices)
    return f"{CODE_INSTRUCTION}\n\n```python\n{q.prompt}```", None


def grade(q: MultipleChoiceQuestion | CodeProblem, answer: str, choice: str | None) -> dict[str, Any]:
    """The row fields that grade an answer: the choice and correctness, or the sandbox's verdict."""
    if isinstance(q, MultipleChoiceQuestion):
        picked = LETTERS.index(choice) if choice and choice in LETTERS[: len(q.choices)] else None
        return {
            "choice": picked,
            "answer_index": q.answer,
            "correct": picked == q.answer,
            "unparseable": picked is None,
        }
    completion = extract_completion(answer, q.prompt, q.entry_point)
    program = humaneval_program(q.prompt, completion, q.test, q.entry_point)
    result = run_code_check(program)
    return {"passed": result.status == "passed", "sandbox": result.status, "sandbox_detail": result.detail[-500:]}
