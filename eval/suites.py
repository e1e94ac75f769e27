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

*Unanswerable* questions come from the same generators, drawn after the documents are chosen
among the terms (FAQ sections) that were not ingested, so the right answer is that the sources
do not contain it. Their gold documents are in no silo of any partition nor in the central
index; a question whose gold document shares its title with an ingested document (the same
concept in another corpus) is not drawn. Drawing them changes neither the answerable questions
nor the documents of a seed, so federations built before are reused.
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
from eval.datasets._sources import seeded_sample
from federation.errors import ConfigError
from silo_node.corpora import CORPORA, load_corpus
from silo_node.ingest.readers import SourceDocument

__all__ = ["SUITES", "Suite", "SuiteData", "load_suite"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_ONTOLOGY_QA_CORPORA = ("mondo", "hpo", "uberon", "cl")


UnanswerableDraw = Callable[[int, int, Mapping[str, list[SourceDocument]], frozenset[str]], list[RetrievalQuestion]]
"""(limit, seed, corpora, excluded gold ids) -> retrieval questions about none of the excluded documents."""


@dataclass(frozen=True)
class Suite:
    """A suite: its corpora and how its questions are drawn."""

    name: str
    corpora: tuple[str, ...]
    retrieval: Callable[[int, int, Mapping[str, list[SourceDocument]]], list[RetrievalQuestion]]
    multiple_choice: Callable[[int, int], list[MultipleChoiceQuestion]]
    code: Callable[[int, int], list[CodeProblem]] | None = None
    unanswerable: UnanswerableDraw | None = None


@dataclass
class SuiteData:
    """What one run of a suite uses: documents and questions (each list may be empty).

    ``unanswerable`` questions (evaluated) and ``calibration`` ones (held out to calibrate the
    abstention threshold) have gold documents that are not among ``documents``.
    """

    suite: Suite
    documents: list[SourceDocument]
    retrieval: list[RetrievalQuestion]
    multiple_choice: list[MultipleChoiceQuestion]
    code: list[CodeProblem]
    skipped: list[str] = field(default_factory=list)  # what could not be loaded, and why
    unanswerable: list[RetrievalQuestion] = field(default_factory=list)
    calibration: list[RetrievalQuestion] = field(default_factory=list)


def _sample(items: Sequence[MultipleChoiceQuestion], limit: int, seed: int) -> list[MultipleChoiceQuestion]:
    if limit >= len(items):
        return list(items)
    picked = random.Random(seed).sample(range(len(items)), limit)
    return [items[i] for i in sorted(picked)]


def _ontology_retrieval(
    limit: int, seed: int, corpora: Mapping[str, list[SourceDocument]], exclude: frozenset[str] = frozenset()
) -> list[RetrievalQuestion]:
    available = [c for c in _ONTOLOGY_QA_CORPORA if corpora.get(c)]
    questions: list[RetrievalQuestion] = []
    for i, corpus in enumerate(available):
        share = limit // len(available) + (1 if i < limit % len(available) else 0)
        if share:
            questions += ontology_questions(
                corpus, limit=share, seed=seed, exclude_doc_ids=exclude, documents=corpora[corpus]
            )
    return questions


def _mmlu(subjects: Sequence[str]) -> Callable[[int, int], list[MultipleChoiceQuestion]]:
    def draw(limit: int, seed: int) -> list[MultipleChoiceQuestion]:
        return _sample(mmlu_subset(load_mmlu_jsonl(), subjects), limit, seed)

    return draw


def _faq(limit: int, seed: int, corpora: Mapping[str, list[SourceDocument]]) -> list[RetrievalQuestion]:
    if not corpora.get("python-docs"):
        raise ConfigError("the Python FAQ questions need the python-docs corpus, which could not be loaded")
    return python_faq_questions(limit=limit, seed=seed, documents=corpora["python-docs"])


def _faq_unanswerable(
    limit: int, seed: int, corpora: Mapping[str, list[SourceDocument]], exclude: frozenset[str]
) -> list[RetrievalQuestion]:
    every = _faq(len(corpora.get("python-docs", ())), seed, corpora)
    return seeded_sample([q for q in every if not q.gold_doc_ids & exclude], limit, seed)


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
        unanswerable=_ontology_retrieval,
    ),
    "code": Suite(
        "code", ("python-docs", "pydocs"), _faq, _mmlu(MMLU_CS_SUBJECTS), _humaneval, unanswerable=_faq_unanswerable
    ),
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
    abstain_limit: int = 0,
    calibration_limit: int = 0,
) -> SuiteData:
    """Draw a suite's questions and the documents its silos hold.

    ``abstain_limit`` unanswerable questions and ``calibration_limit`` more, disjoint from them,
    are drawn after the documents (see the module docstring); fewer if fewer qualify, the
    evaluated ones first. A corpus or dataset whose package is missing is skipped and named in
    ``skipped`` (the report says so); a suite left with no documents is an error.
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
    unanswerable, calibration = _unanswerable(
        suite, abstain_limit, calibration_limit, seed, corpora, documents, skipped
    )
    return SuiteData(
        suite,
        documents,
        [q for q in retrieval if q.gold_doc_ids & held],
        mc,
        code,
        skipped,
        unanswerable,
        calibration,
    )


def _unanswerable(
    suite: Suite,
    abstain_limit: int,
    calibration_limit: int,
    seed: int,
    corpora: Mapping[str, list[SourceDocument]],
    documents: Sequence[SourceDocument],
    skipped: list[str],
) -> tuple[list[RetrievalQuestion], list[RetrievalQuestion]]:
    """Questions whose gold documents are not ingested: (evaluated, calibration)."""
    wanted = abstain_limit + calibration_limit
    draw = suite.unanswerable
    if draw is None or wanted == 0:
        return [], []
    held = {d.doc_id for d in documents}
    titles = {d.title.casefold() for d in documents if d.title}
    # Not held, and no held document under the same title (the same concept in another corpus).
    exclude = frozenset(held) | {
        d.doc_id for docs in corpora.values() for d in docs if d.title and d.title.casefold() in titles
    }
    pool = _attempt(f"{suite.name} unanswerable questions", skipped, lambda: list(draw(wanted, seed, corpora, exclude)))
    if any(q.gold_doc_ids & held for q in pool):
        raise RuntimeError("an unanswerable question's gold document was ingested")  # a defect, not bad data
    order = list(range(len(pool)))
    random.Random(f"{seed}:unanswerable:{suite.name}").shuffle(order)
    evaluated = sorted(order[:abstain_limit])
    return [pool[i] for i in evaluated], [pool[i] for i in sorted(order[abstain_limit:])]


def corpus_description(silo: str) -> str:
    """The card description of a natural silo."""
    if silo in CORPORA:
        return CORPORA[silo].description
    if silo.startswith("python-"):
        return f"Python documentation: the {silo.removeprefix('python-')} section"
    return silo
