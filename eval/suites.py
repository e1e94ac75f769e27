"""The two suites: which corpora the silos hold and which questions are asked.

- ``medical``: silos from the medical sources (MONDO diseases, HPO phenotypes, UBERON
  anatomy, CL cell types, Wikipedia summaries, WordNet glosses); retrieval questions from
  ontology synonyms with a known gold term (``What is <synonym>?``); multiple choice from
  MMLU-Med (the six medical subjects, as in MIRAGE).
- ``code``: silos from the Python documentation (reST sections of Debian's
  ``python3.11-doc``, by folder) and the standard library's docstrings; retrieval questions
  from the Python FAQ (gold = the answer section); multiple choice from MMLU's computer
  science subjects; HumanEval problems (pass@1, run in the sandbox).

A run ingests a sample of each corpus: every gold document of the sampled questions plus
seeded random others up to ``docs_per_corpus``, so recall is measured against distractors.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from eval.datasets import (
    MMLU_CS_SUBJECTS,
    MMLU_MED_SUBJECTS,
    CodeProblem,
    MultipleChoiceQuestion,
    RetrievalQuestion,
    load_humaneval,
    load_mmlu_jsonl,
    mmlu_subset,
    ontology_questions,
    python_faq_questions,
)
from federation.errors import ConfigError
from silo_node.corpora import CORPORA, load_corpus
from silo_node.ingest.readers import SourceDocument

__all__ = ["SUITES", "Suite", "SuiteData", "load_suite"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_ONTOLOGY_QA_CORPORA = ("mondo", "hpo", "uberon", "cl")


@dataclass(frozen=True)
class Suite:
    """A suite: its corpora and how its questions are drawn."""

    name: str
    corpora: tuple[str, ...]
    retrieval: Callable[[int, int, Mapping[str, list[SourceDocument]]], list[RetrievalQuestion]]
    multiple_choice: Callable[[int, int], list[MultipleChoiceQuestion]]
    code: Callable[[int, int], list[CodeProblem]] | None = None


@dataclass
class SuiteData:
    """What one run of a suite uses: documents and questions (each list may be empty)."""

    suite: Suite
    documents: list[SourceDocument]
    retrieval: list[RetrievalQuestion]
    multiple_choice: list[MultipleChoiceQuestion]
    code: list[CodeProblem]
    skipped: list[str] = field(default_factory=list)  # what could not be loaded, and why


def _sample(items: Sequence[MultipleChoiceQuestion], limit: int, seed: int) -> list[MultipleChoiceQuestion]:
    if limit >= len(items):
        return list(items)
    picked = random.Random(seed).sample(range(len(items)), limit)
    return [items[i] for i in sorted(picked)]


def _ontology_retrieval(limit: int, seed: int, corpora: Mapping[str, list[SourceDocument]]) -> list[RetrievalQuestion]:
    available = [c for c in _ONTOLOGY_QA_CORPORA if corpora.get(c)]
    questions: list[RetrievalQuestion] = []
    for i, corpus in enumerate(available):
        share = limit // len(available) + (1 if i < limit % len(available) else 0)
        if share:
            questions += ontology_questions(corpus, limit=share, seed=seed, documents=corpora[corpus])
    return questions


def _mmlu(subjects: Sequence[str]) -> Callable[[int, int], list[MultipleChoiceQuestion]]:
    def draw(limit: int, seed: int) -> list[MultipleChoiceQuestion]:
        return _sample(mmlu_subset(load_mmlu_jsonl(), subjects), limit, seed)

    return draw


def _faq(limit: int, seed: int, corpora: Mapping[str, list[SourceDocument]]) -> list[RetrievalQuestion]:
    if not corpora.get("python-docs"):
        raise ConfigError("the Python FAQ questions need the python-docs corpus, which could not be loaded")
    return python_faq_questions(limit=limit, seed=seed, documents=corpora["python-docs"])


def _humaneval(limit: int, seed: int) -> list[CodeProblem]:
    problems = load_humaneval()
    if limit >= len(problems):
        return problems
    return [problems[i] for i in sorted(random.Random(seed).sample(range(len(problems)), limit))]


SUITES: dict[str, Suite] = {
    "medical": Suite(
        "medical",
        ("mondo", "hpo", "uberon", "cl", "wiki", "wordnet"),
        _ontology_retrieval,
        _mmlu(MMLU_MED_SUBJECTS),
    ),
    "code": Suite("code", ("python-docs", "pydocs"), _faq, _mmlu(MMLU_CS_SUBJECTS), _humaneval),
}


def _attempt(what: str, skipped: list[str], load: Callable[[], list[_T]]) -> list[_T]:
    try:
        return load()
    except ConfigError as exc:
        logger.warning("%s skipped: %s", what, exc)
        skipped.append(f"{what}: {exc}")
        return []


def load_suite(
    name: str,
    *,
    retrieval_limit: int,
    mc_limit: int,
    code_limit: int,
    docs_per_corpus: int,
    seed: int = 0,
) -> SuiteData:
    """Draw a suite's questions and the documents its silos hold.

    A corpus or dataset whose package is missing is skipped and named in ``skipped``
    (the report says so); a suite left with no documents is an error.
    """
    if name not in SUITES:
        raise ConfigError(f"unknown suite '{name}': choose from {', '.join(SUITES)} or 'all'")
    suite = SUITES[name]
    skipped: list[str] = []
    corpora = {corpus: _attempt(f"corpus {corpus}", skipped, partial(load_corpus, corpus)) for corpus in suite.corpora}
    retrieval = _attempt(
        f"{name} retrieval questions", skipped, lambda: list(suite.retrieval(retrieval_limit, seed, corpora))
    )
    mc = _attempt(f"{name} multiple choice", skipped, lambda: list(suite.multiple_choice(mc_limit, seed)))
    code_loader = suite.code
    code = (
        _attempt(f"{name} code problems", skipped, lambda: list(code_loader(code_limit, seed)))
        if code_loader is not None and code_limit > 0
        else []
    )
    gold = {doc_id for q in retrieval for doc_id in q.gold_doc_ids}
    documents: list[SourceDocument] = []
    for corpus, docs in corpora.items():
        must = [d for d in docs if d.doc_id in gold]
        others = [d for d in docs if d.doc_id not in gold]
        room = max(0, docs_per_corpus - len(must))
        picked = sorted(random.Random(f"{seed}:{corpus}").sample(range(len(others)), min(room, len(others))))
        documents += must + [others[i] for i in picked]
    if not documents:
        raise ConfigError(f"suite '{name}' has no documents: {'; '.join(skipped) or 'every corpus is empty'}")
    held = {d.doc_id for d in documents}
    missing = [q for q in retrieval if not q.gold_doc_ids & held]
    if missing:
        skipped.append(f"{len(missing)} retrieval questions whose gold documents are in no loaded corpus")
    return SuiteData(
        suite,
        documents,
        [q for q in retrieval if q.gold_doc_ids & held],
        mc,
        code,
        skipped,
    )


def corpus_description(silo: str) -> str:
    """The card description of a natural silo."""
    if silo in CORPORA:
        return CORPORA[silo].description
    if silo.startswith("python-"):
        return f"Python documentation: the {silo.removeprefix('python-')} section"
    return silo
