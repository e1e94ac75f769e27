"""Retrieval questions from ontology synonyms: ``What is <synonym>?``, answered by the term that has it.

For the ontology corpora of ``silo_node.corpora`` (``mondo``, ``hpo``, ``uberon``, ``cl``) each
term's document ends with a ``Synonyms: a; b`` line (the label is never repeated there). A synonym
can be asked about if it is at least 4 characters long, is not the term's label (compared
case-insensitively) and names no other term (as its label or one of its synonyms): an ambiguous
name has no single gold document. The gold document is the term's, by its corpus id
(``MONDO:0005148``), so retrieval is scored against what a silo holding the corpus returns.

Held out from router training: the harness trains the learned router on the titles of ingested
documents that are no question's gold document (``eval.runner``), so a term asked about here is
never a training example; ``exclude_doc_ids`` keeps further terms out of the questions (for
instance ones a router was already trained on).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence

from eval.datasets._sources import check_limit
from eval.datasets.base import RetrievalQuestion
from federation.errors import ConfigError
from silo_node.corpora import load_corpus
from silo_node.ingest.readers import SourceDocument

__all__ = ["ONTOLOGY_CORPORA", "ontology_questions"]

logger = logging.getLogger(__name__)

ONTOLOGY_CORPORA: tuple[str, ...] = ("cl", "hpo", "mondo", "uberon")
"""The corpora whose documents are ontology terms with synonyms."""

_MIN_CHARS = 4
_SYNONYMS = "\nSynonyms: "


def ontology_questions(
    corpus: str,
    *,
    limit: int,
    seed: int = 0,
    exclude_doc_ids: Iterable[str] = (),
    documents: Sequence[SourceDocument] | None = None,
) -> list[RetrievalQuestion]:
    """Draw ``What is <synonym>?`` questions about distinct terms of an ontology corpus.

    The terms with at least one usable synonym (see the module docstring), less ``exclude_doc_ids``,
    are sorted by id; ``limit`` of them are drawn with ``random.Random(seed)`` and each is asked
    about one of its usable synonyms, drawn with the same generator. The same corpus data, limit
    and seed give the same questions.

    Args:
        corpus: One of ``ONTOLOGY_CORPORA``.
        limit: How many questions (at most one per term); fewer if fewer terms qualify; 0 gives none.
        seed: Seed of the draw.
        exclude_doc_ids: Terms not to ask about.
        documents: The corpus's documents if already loaded (``load_corpus(corpus)``); read otherwise.

    Returns:
        The questions, sorted by id (``<corpus>-synonym:<term id>:<n>``, ``n`` the synonym's position
        on the term's ``Synonyms`` line).

    Raises:
        ConfigError: If the corpus is not an ontology corpus, the limit is negative, or the corpus's
            package is missing.
    """
    if corpus not in ONTOLOGY_CORPORA:
        raise ConfigError(f"no ontology questions for corpus '{corpus}'; choose one of: {', '.join(ONTOLOGY_CORPORA)}")
    check_limit(limit, f"ontology questions of {corpus}")
    pool = _askable(load_corpus(corpus) if documents is None else documents)
    excluded = set(exclude_doc_ids)
    terms = sorted(doc_id for doc_id in pool if doc_id not in excluded)
    rng = random.Random(seed)
    questions = []
    for doc_id in rng.sample(terms, min(limit, len(terms))):
        position, synonym = rng.choice(pool[doc_id])
        questions.append(
            RetrievalQuestion(
                id=f"{corpus}-synonym:{doc_id}:{position}",
                question=f"What is {synonym}?",
                gold_doc_ids=frozenset({doc_id}),
                corpus=corpus,
                dataset="ontology-qa",
            )
        )
    logger.info("ontology questions: %d of %d askable %s terms", len(questions), len(terms), corpus)
    return sorted(questions, key=lambda question: question.id)


def _askable(documents: Iterable[SourceDocument]) -> dict[str, list[tuple[int, str]]]:
    """Term id to its usable synonyms, each with its position on the term's ``Synonyms`` line."""
    labels: dict[str, str] = {}
    synonyms: dict[str, list[tuple[int, str]]] = {}
    for document in documents:
        line = document.text.rpartition(_SYNONYMS)[2] if _SYNONYMS in document.text else ""
        labels[document.doc_id] = document.title.casefold()
        synonyms[document.doc_id] = [(i, " ".join(name.split())) for i, name in enumerate(line.split("; ")) if line]
    owners = Counter(  # How many terms each name (label or synonym) belongs to.
        name for doc_id, label in labels.items() for name in {label} | {s.casefold() for _, s in synonyms[doc_id]}
    )
    askable: dict[str, list[tuple[int, str]]] = {}
    for doc_id, listed in synonyms.items():
        usable = [
            (i, name)
            for i, name in listed
            if len(name) >= _MIN_CHARS and name.casefold() != labels[doc_id] and owners[name.casefold()] == 1
        ]
        if usable:
            askable[doc_id] = usable
    return askable
