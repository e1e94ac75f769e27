"""Retrieval questions from the Python FAQ: each FAQ heading that is a question, answered by its section.

The ``python-docs`` corpus of ``silo_node.corpora`` holds one document per section of the Python
documentation's reST sources (Debian ``python3.11-doc``), with the section heading as its title and
the section body as its text. The FAQ pages (``faq/*.rst.txt``) title most sections with a question
(``How can I create a stand-alone binary from a Python script?``); each such section becomes a
``RetrievalQuestion`` whose question is the heading and whose gold document is that section.

The questions are read from the corpus documents themselves, so their gold ids are the corpus's ids
by construction (one section parser and one slug function, in ``silo_node.ingest.rst``). The heading is
not part of a document's text (only its title, which is not embedded), so the question does not
appear verbatim in the passage that answers it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from eval.datasets._sources import check_limit, seeded_sample
from eval.datasets.base import RetrievalQuestion
from silo_node.corpora import load_corpus
from silo_node.ingest.readers import SourceDocument

__all__ = ["python_faq_questions"]

logger = logging.getLogger(__name__)

_CORPUS = "python-docs"
_FAQ_PREFIX = "pydoc:faq/"


def python_faq_questions(
    *, limit: int | None = None, seed: int = 0, documents: Sequence[SourceDocument] | None = None
) -> list[RetrievalQuestion]:
    """The Python FAQ's questions, or a seeded sample of them.

    Args:
        limit: At most this many (drawn with ``random.Random(seed)``); ``None`` gives every question
            and 0 none.
        seed: Seed of the draw; the same seed gives the same questions.
        documents: The ``python-docs`` corpus if already loaded (``load_corpus("python-docs")``); read otherwise.

    Returns:
        The questions in corpus order (by gold id); ids are ``python-faq:<section id>``.

    Raises:
        ConfigError: If ``limit`` is negative or the Debian package ``python3.11-doc`` is missing
            (the message gives the apt-get command).
    """
    check_limit(limit, "Python FAQ questions")
    if limit == 0:
        return []
    questions = [
        RetrievalQuestion(
            id=f"python-faq:{document.doc_id.removeprefix('pydoc:')}",
            question=document.title,
            gold_doc_ids=frozenset({document.doc_id}),
            corpus=_CORPUS,
            dataset="python-faq",
        )
        for document in (load_corpus(_CORPUS) if documents is None else documents)
        if document.doc_id.startswith(_FAQ_PREFIX) and document.title.endswith("?")
    ]
    logger.info("python faq: %d questions", len(questions))
    return seeded_sample(questions, limit, seed)
