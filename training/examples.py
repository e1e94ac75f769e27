"""Retrieval-grounded training examples, built inside a silo from its own documents.

An example is what the gateway would send the model for a question, and the reply it should
have given: the question, the silo's own retrieved passages as numbered sources (the passage
that answers it among distractors, at the rank the silo's search gave it or, in a share of
the examples, at a random position), and a structured reply
(``reasoning``, ``answer``, ``citations``, the gateway's answer format) whose answer restates
the right passage and cites its number. Training on such pairs teaches the model to answer
from the sources and to cite the one it used, which is what the grounded-answer metrics of
the evaluation harness measure.

Questions come from the operator's QA pairs (JSONL: ``{"question": ..., "doc_id": ...,
"answer": ...}``, only ``question`` required) or, without them, from the documents
themselves: titles ("What is X?"), listed synonyms, and headings that are questions (FAQs).
Passages are redacted with the silo's PII rules before they are used, so an adapter cannot
learn what the silo would never release.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from federation.errors import ValidationFailed
from gateway.prompting import NumberedSource, build_messages
from gateway.structured import SchemaLimits, answer_schema
from silo_node.store import StoredChunk

_SYNONYMS = re.compile(r"^Synonyms:\s*(.+)$", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_CALLABLE_TITLE = re.compile(r"^[A-Za-z_][\w.]*\(")


@dataclass(frozen=True)
class QAPair:
    """One training question.

    Attributes:
        question: the question text.
        doc_id: the document that answers it (None: the silo's best match for the question).
        answer: the reference answer (None: the answering passage's first sentences).
        kind: where the question came from (``supplied``, ``title``, ``synonym``, ``heading``).
        subject: for a synonym question, the synonym asked about (the reasoning names it).
    """

    question: str
    doc_id: str | None = None
    answer: str | None = None
    kind: str = "supplied"
    subject: str | None = None


@dataclass(frozen=True)
class TrainingExample:
    """A prompt in the gateway's structured answer format and the reply the model should give.

    Attributes:
        messages: the system and user chat messages, as the gateway builds them.
        target: the reply, a JSON object in the order the schema generates it.
        gold: the source number of the passage that answers the question.
        doc_id: the answering document.
        kind: the question's origin (see :class:`QAPair`).
    """

    messages: list[dict[str, str]]
    target: str
    gold: int
    doc_id: str
    kind: str
    schema: dict[str, Any] = field(repr=False, default_factory=dict)


class SiloCorpus(Protocol):
    """What building examples needs of a silo: its documents and its own search."""

    def first_chunks(self, *, offset: int = 0, limit: int = 100) -> list[StoredChunk]:
        """Each document's first chunk, ordered by document id."""
        ...

    def document_chunks(self, doc_id: str) -> list[StoredChunk]:
        """One document's chunks in order."""
        ...

    def search(self, questions: Sequence[str], k: int) -> list[list[StoredChunk]]:
        """The silo's top-``k`` chunks for each question, best first."""
        ...

    def redact(self, text: str) -> str:
        """The text with the silo's PII rules applied."""
        ...


def read_qa_pairs(path: Path) -> list[QAPair]:
    """Read operator-supplied QA pairs from a JSONL file.

    Raises:
        ValidationFailed: the file cannot be read, or a line is not an object with a
            non-empty ``question`` string (the line number is in the message).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"cannot read QA pairs from {path}: {exc}", code="invalid_qa_pairs") from exc
    pairs: list[QAPair] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationFailed(f"{path}:{number}: not JSON ({exc.msg})", code="invalid_qa_pairs") from exc
        question = item.get("question") if isinstance(item, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise ValidationFailed(f"{path}:{number}: needs a non-empty 'question' string", code="invalid_qa_pairs")
        doc_id, answer = item.get("doc_id"), item.get("answer")
        if doc_id is not None and not isinstance(doc_id, str):
            raise ValidationFailed(f"{path}:{number}: 'doc_id' must be a string", code="invalid_qa_pairs")
        if answer is not None and not isinstance(answer, str):
            raise ValidationFailed(f"{path}:{number}: 'answer' must be a string", code="invalid_qa_pairs")
        pairs.append(QAPair(question=" ".join(question.split()), doc_id=doc_id, answer=answer))
    return pairs


def _title_question(title: str) -> tuple[str, str] | None:
    title = " ".join(title.split()).rstrip(".")
    if not title:
        return None
    if title.endswith("?"):
        return title, "heading"
    if _CALLABLE_TITLE.match(title):
        return f"What does {title.split('(')[0]} do?", "title"
    return f"What is {title}?", "title"


def questions_from_documents(chunks: Iterable[StoredChunk], *, synonyms_per_doc: int = 1) -> Iterator[QAPair]:
    """Questions a silo's documents answer: titles, listed synonyms, question headings.

    Args:
        chunks: each document's first chunk.
        synonyms_per_doc: most synonym questions per document (from a ``Synonyms:`` line).
    """
    for chunk in chunks:
        made = _title_question(chunk.title)
        if made is not None:
            yield QAPair(question=made[0], doc_id=chunk.doc_id, kind=made[1])
        listed = _SYNONYMS.search(chunk.text)
        if listed and synonyms_per_doc > 0:
            names = [n.strip() for n in listed.group(1).split(";") if 2 < len(n.strip()) < 80]
            for name in names[:synonyms_per_doc]:
                yield QAPair(question=f"What is {name}?", doc_id=chunk.doc_id, kind="synonym", subject=name)


def reference_answer(chunk: StoredChunk, *, max_chars: int = 300) -> str:
    """The first sentences of a passage, without a leading sentence that only repeats its title."""
    text = _SYNONYMS.sub("", chunk.text).strip()
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    if len(sentences) > 1 and sentences[0].rstrip(".").casefold() == chunk.title.strip().rstrip(".").casefold():
        sentences = sentences[1:]
    answer = ""
    for sentence in sentences:
        if answer and len(answer) + len(sentence) + 1 > max_chars:
            break
        answer = f"{answer} {sentence}".strip()
    return answer[:max_chars].rstrip()


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut


@dataclass(frozen=True)
class ExampleSettings:
    """How examples are built.

    Attributes:
        sources: passages per prompt (the answering one and distractors).
        passage_chars: each passage clipped to this many characters (training cost).
        answer_chars: the reference answer's length bound.
        reasoning_chars: the schema's reasoning bound (as the gateway sends it).
        label: the source label the model sees (the silo's name).
        retrieval_order_share: share of examples whose sources keep the silo's retrieval order,
            the answering passage at the rank the silo's search gave it (as the gateway shows
            sources); the others put it at a random position, so the model learns to read
            which source answers rather than to cite the first.
        seed: seeds which examples are shuffled and the answering passage's position there.
    """

    sources: int = 3
    passage_chars: int = 360
    answer_chars: int = 300
    reasoning_chars: int = 400
    label: str = "silo"
    retrieval_order_share: float = 0.65
    seed: int = 0


def build_examples(corpus: SiloCorpus, pairs: Sequence[QAPair], settings: ExampleSettings) -> list[TrainingExample]:
    """Build one example per QA pair that the silo can ground.

    The answering chunk is the document's chunk the silo ranks highest for the question (or
    the silo's top hit when the pair names no document); the other sources are the silo's
    next hits. A pair whose document no longer exists is skipped.
    """
    if settings.sources < 1:
        raise ValueError("an example needs at least one source")
    rng = random.Random(settings.seed)
    retrieved = corpus.search([p.question for p in pairs], settings.sources + 8)
    examples: list[TrainingExample] = []
    for pair, hits in zip(pairs, retrieved, strict=True):
        gold = _answering_chunk(corpus, pair, hits)
        if gold is None:
            continue
        distractors = [h for h in hits if h.doc_id != gold.doc_id][: settings.sources - 1]
        passages = [*distractors]
        position = _position(gold, hits, len(passages), rng, settings.retrieval_order_share)
        passages.insert(position, gold)
        sources = [
            NumberedSource(
                number=i + 1,
                title=corpus.redact(p.title),
                text=corpus.redact(_clip(p.text, settings.passage_chars)),
                label=settings.label,
            )
            for i, p in enumerate(passages)
        ]
        number = position + 1
        answer = corpus.redact(pair.answer or reference_answer(gold, max_chars=settings.answer_chars))
        if not answer:
            continue
        reply = {
            "reasoning": _reasoning(pair, number, sources[position].title, corpus),
            "answer": f"{answer.rstrip()} [{number}]",
            "citations": [number],
        }
        limits = SchemaLimits(reasoning_chars=settings.reasoning_chars, answer_chars=max(600, len(reply["answer"])))
        examples.append(
            TrainingExample(
                messages=build_messages(pair.question, sources, answer_format="structured"),
                target=json.dumps(reply, ensure_ascii=False),
                gold=number,
                doc_id=gold.doc_id,
                kind=pair.kind,
                schema=answer_schema(range(1, len(sources) + 1), limits=limits),
            )
        )
    return examples


def _position(
    gold: StoredChunk, hits: Sequence[StoredChunk], distractors: int, rng: random.Random, rank_share: float
) -> int:
    """Where the answering passage goes among ``distractors`` others (0-based).

    With probability ``rank_share``, its rank in the silo's hits among the passages the prompt
    shows (the hits of other documents); otherwise, and when the silo did not retrieve it, a
    uniformly random position.
    """
    keep_rank = rng.random() < rank_share
    shuffled = rng.randrange(distractors + 1)
    if not keep_rank:
        return shuffled
    for rank, hit in enumerate(hits):
        if hit.doc_id == gold.doc_id:  # the hits before it are all other documents' (the distractors)
            return min(rank, distractors) if hit.chunk_id == gold.chunk_id else shuffled
    return shuffled


def _reasoning(pair: QAPair, number: int, title: str, corpus: SiloCorpus) -> str:
    """Why the cited source answers: the synonym that links the question to it, or its subject."""
    if pair.subject and pair.subject.casefold() != title.casefold():
        subject = corpus.redact(pair.subject)
        return f"The question asks about {subject}, which source [{number}] lists as a name of {title}."
    return f"Source [{number}] is about {title}, which the question asks about."


def _answering_chunk(corpus: SiloCorpus, pair: QAPair, hits: Sequence[StoredChunk]) -> StoredChunk | None:
    if pair.doc_id is None:
        return hits[0] if hits else None
    for hit in hits:
        if hit.doc_id == pair.doc_id:
            return hit
    chunks = corpus.document_chunks(pair.doc_id)
    return chunks[0] if chunks else None


def split_examples(
    examples: Sequence[TrainingExample], held_out: float, seed: int
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Split by document (never the same document on both sides): (train, held out)."""
    docs = sorted({e.doc_id for e in examples})
    rng = np.random.default_rng(seed)
    rng.shuffle(docs)
    cut = round(len(docs) * held_out)
    held = set(docs[:cut])
    return [e for e in examples if e.doc_id not in held], [e for e in examples if e.doc_id in held]


__all__ = [
    "ExampleSettings",
    "QAPair",
    "SiloCorpus",
    "TrainingExample",
    "build_examples",
    "questions_from_documents",
    "read_qa_pairs",
    "reference_answer",
    "split_examples",
]
