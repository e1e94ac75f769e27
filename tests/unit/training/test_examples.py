"""Training examples built inside a silo: questions, grounded replies, the silo's policy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from federation.encoder import SentenceTransformerEncoder
from federation.errors import Forbidden, ValidationFailed
from tests.conftest import Federation
from tests.integration.training.conftest import allow_training
from training.examples import (
    ExampleSettings,
    QAPair,
    build_examples,
    questions_from_documents,
    read_qa_pairs,
    reference_answer,
    split_examples,
)
from training.silo_corpus import LocalSiloCorpus

pytestmark = pytest.mark.unit


def test_a_silo_that_does_not_allow_training_refuses(
    federation: Federation, encoder: SentenceTransformerEncoder
) -> None:
    with pytest.raises(Forbidden, match=r"policy\.training\.allowed"):
        LocalSiloCorpus(federation.silo_dir(), encoder=encoder)


def test_examples_are_the_gateways_prompt_with_a_reply_citing_the_answering_passage(
    federation: Federation, encoder: SentenceTransformerEncoder
) -> None:
    allow_training(federation.silo_dir())
    with LocalSiloCorpus(federation.silo_dir(), encoder=encoder) as corpus:
        chunks = corpus.first_chunks(limit=100)
        pairs = list(questions_from_documents(chunks))
        examples = build_examples(corpus, pairs, ExampleSettings(sources=3, label="alpha", seed=1))
    assert len(chunks) >= 10 and len(examples) == len(pairs)
    positions = set()
    for example in examples:
        system, user = example.messages
        assert system["role"] == "system" and "JSON" in system["content"]  # the structured answer format
        reply = json.loads(example.target)
        assert list(reply) == ["reasoning", "answer", "citations"]
        assert reply["citations"] == [example.gold] and reply["answer"].endswith(f"[{example.gold}]")
        assert f"source [{example.gold}]" in reply["reasoning"].lower()
        sources = re.findall(r'<source number="(\d+)">\n(.*?)\n</source>', user["content"], re.DOTALL)
        assert [int(n) for n, _ in sources] == [1, 2, 3]
        gold_text = dict(sources)[str(example.gold)]
        # The answer restates the cited passage: its words come from that source.
        first_words = reply["answer"].split()[:4]
        assert all(w.strip(".,;:()") in gold_text for w in first_words), (reply["answer"], gold_text)
        positions.add(example.gold)
    assert positions == {1, 2, 3}  # the answering passage is not always in the same place


def test_the_answering_passage_sits_at_its_search_rank_or_at_random_as_the_share_says(
    federation: Federation, encoder: SentenceTransformerEncoder
) -> None:
    allow_training(federation.silo_dir())
    with LocalSiloCorpus(federation.silo_dir(), encoder=encoder) as corpus:
        pairs = list(questions_from_documents(corpus.first_chunks(limit=100)))
        hits = corpus.search([p.question for p in pairs], 3 + 8)
        in_rank = build_examples(corpus, pairs, ExampleSettings(sources=3, retrieval_order_share=1.0))
        at_random = build_examples(corpus, pairs, ExampleSettings(sources=3, retrieval_order_share=0.0))
    assert len(in_rank) == len(at_random) == len(pairs)
    # In retrieval order the answering passage is where the gateway would show it: after the
    # other documents' passages the silo ranked above it.
    for pair, found, example in zip(pairs, hits, in_rank, strict=True):
        rank = next(i for i, h in enumerate(found) if h.doc_id == pair.doc_id)
        assert example.gold == min(rank, 2) + 1, pair.question
    # The silo's own search puts most answers first; shuffled examples spread them out.
    firsts = sum(e.gold == 1 for e in in_rank) / len(in_rank)
    assert firsts > 0.6
    assert {e.gold for e in at_random} == {1, 2, 3}
    assert sum(e.gold == 1 for e in at_random) / len(at_random) < firsts - 0.2


def test_private_details_are_redacted_before_they_reach_an_example(
    federation: Federation, encoder: SentenceTransformerEncoder
) -> None:
    allow_training(federation.silo_dir())
    question = "Where will the results of the blood pressure review be sent?"
    with LocalSiloCorpus(federation.silo_dir(), encoder=encoder) as corpus:
        examples = build_examples(
            corpus, [QAPair(question, answer="They go to jane.doe@example.org.")], ExampleSettings(sources=3)
        )
    text = json.dumps([examples[0].messages, examples[0].target])
    assert "jane.doe@example.org" not in text and "0958" not in text
    assert "[REDACTED:" in text


def test_qa_files_are_read_with_their_line_numbers_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "What is  asthma?", "doc_id": "asthma"}\n\n{"question": "Why?"}\n', encoding="utf-8")
    assert read_qa_pairs(path) == [QAPair("What is asthma?", doc_id="asthma"), QAPair("Why?")]
    path.write_text('{"question": "ok"}\n{"answer": "no question"}\n', encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"qa\.jsonl:2"):
        read_qa_pairs(path)
    path.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"qa\.jsonl:1: not JSON"):
        read_qa_pairs(path)


def test_questions_come_from_titles_synonyms_and_question_headings() -> None:
    from silo_node.store import StoredChunk

    chunks = [
        StoredChunk(1, "MONDO:1", "asthma", "Asthma. A lung disease.\nSynonyms: reactive airway disease; RAD", {}),
        StoredChunk(2, "faq:1", "Why is Python slow?", "Because it is interpreted.", {}),
        StoredChunk(3, "python:json.loads", "json.loads(s, *, cls=None)", "Deserialize s to a Python object.", {}),
    ]
    made = list(questions_from_documents(chunks))
    questions = [(q.question, q.kind) for q in made]
    assert made[1].subject == "reactive airway disease"  # the reasoning names the synonym that links it
    assert questions == [
        ("What is asthma?", "title"),
        ("What is reactive airway disease?", "synonym"),
        ("Why is Python slow?", "heading"),
        ("What does json.loads do?", "title"),
    ]
    assert reference_answer(chunks[0]) == "A lung disease."


def test_held_out_examples_never_share_a_document_with_training_ones(
    federation: Federation, encoder: SentenceTransformerEncoder
) -> None:
    allow_training(federation.silo_dir())
    with LocalSiloCorpus(federation.silo_dir(), encoder=encoder) as corpus:
        examples = build_examples(corpus, list(questions_from_documents(corpus.first_chunks())), ExampleSettings())
    train, held = split_examples(examples, 0.3, seed=0)
    assert train and held and len(train) + len(held) == len(examples)
    assert not {e.doc_id for e in train} & {e.doc_id for e in held}
