"""Labelling questions against real silos and training the learned router from them."""

from __future__ import annotations

import httpx
import pytest

from federation.config import RetrievalSettings
from federation.signing import RequestSigner
from gateway.cli import unlabelled_silos
from gateway.fanout import SiloPool
from gateway.router_training import label_questions, silo_questions
from router import LearnedRouter, SiloView
from silo_node.ingest import iter_documents, sample_data_dir
from tests.conftest import OPERATOR_TOKEN

pytestmark = pytest.mark.integration

CODE_DOCS = [
    ("json-loads", "json.loads parses a JSON string and returns the Python object, such as a dict or a list."),
    ("list-sort", "list.sort sorts a Python list in place; sorted returns a new sorted list from any iterable."),
    ("dict-get", "dict.get returns the value for a key in a Python dictionary, or a default if the key is missing."),
    ("pathlib", "pathlib.Path represents filesystem paths; Path.read_text reads a whole file as a string."),
    ("asyncio-run", "asyncio.run runs a coroutine in a new event loop and returns its result."),
    ("re-search", "re.search scans a string for the first match of a regular expression pattern."),
]
MEDICAL = [
    "What lowers high blood pressure?",
    "How is asthma treated?",
    "What are stroke symptoms?",
    "What causes anemia?",
    "How is influenza spread?",
    "What is appendicitis?",
    "Treatment of migraine?",
    "What is type 2 diabetes?",
    "Signs of sepsis?",
    "What are kidney stones?",
]
CODE = [
    "How do I parse JSON in Python?",
    "How to sort a list in Python?",
    "Read a file into a string in Python",
    "Get a value from a dict with a default",
    "Run an async coroutine",
    "Find a regex match in a string",
    "Python JSON string to dict",
    "sorted vs list.sort",
    "pathlib read file",
    "regular expression search Python",
]


async def _add_code_docs_to_beta(silo_transports) -> None:
    documents = [{"id": i, "title": i, "text": t} for i, t in CODE_DOCS]
    async with httpx.AsyncClient(
        transport=silo_transports["beta"], base_url="http://beta", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    ) as operator:
        assert (await operator.post("/v1/admin/documents", json={"documents": documents})).json()["added"] == 6


async def test_labels_and_a_trained_router_send_each_topic_to_its_silo(federation, encoder, silo_transports) -> None:
    await _add_code_docs_to_beta(silo_transports)
    pool = SiloPool(
        federation.membership,
        RequestSigner(federation.gateway),
        RetrievalSettings(deadline_s=10),
        transports=silo_transports,
    )
    try:
        examples = await label_questions(MEDICAL + CODE, encoder=encoder, pool=pool, k=3)
    finally:
        await pool.aclose()
    assert len(examples) == 20
    assert all("alpha" in e.relevant for e in examples[:10])
    assert sum("beta" in e.relevant for e in examples[10:]) >= 8
    model = LearnedRouter.train(examples)
    silos: tuple[SiloView, ...] = examples[0].silos
    medical = model.route(encoder.encode(["Which drugs treat hypertension?"])[0], silos, max_silos=1)
    code = model.route(encoder.encode(["How can I load JSON text into a Python dict?"])[0], silos, max_silos=1)
    assert medical.selected == ["alpha"] and code.selected == ["beta"]


async def test_questions_drawn_from_every_silo_teach_the_router_the_silo_its_questions_missed(
    federation, encoder, silo_transports
) -> None:
    await _add_code_docs_to_beta(silo_transports)
    pool = SiloPool(
        federation.membership,
        RequestSigner(federation.gateway),
        RetrievalSettings(deadline_s=10),
        transports=silo_transports,
    )
    try:
        drawn = await silo_questions(pool, per_silo=6)
        medical_only = await label_questions(MEDICAL, encoder=encoder, pool=pool, k=3)
        covering = medical_only + await label_questions(
            [t for titles in drawn.values() for t in titles], encoder=encoder, pool=pool, k=3
        )
    finally:
        await pool.aclose()
    assert set(drawn) == {"alpha", "beta"}
    assert sorted(drawn["beta"]) == sorted(i for i, _ in CODE_DOCS)  # each title once, from the silo's own passages
    sample_titles = {d.title for d in iter_documents([sample_data_dir()], max_file_bytes=10_000_000)}
    assert len(drawn["alpha"]) == 6 and set(drawn["alpha"]) <= sample_titles  # alpha's own documents' titles
    names = ["alpha", "beta"]
    assert unlabelled_silos(medical_only, names) == ["beta"]  # the supplied questions never reach beta
    assert unlabelled_silos(covering, names) == []
    code_question = encoder.encode(["How can I load JSON text into a Python dict?"])[0]
    covered = LearnedRouter.train(covering).route(code_question, medical_only[0].silos, max_silos=1)
    assert covered.selected == ["beta"]


def test_router_training_names_the_silos_no_question_found() -> None:
    from types import SimpleNamespace

    examples = [SimpleNamespace(relevant=frozenset({"big"})), SimpleNamespace(relevant=frozenset({"big", "mid"}))]
    assert unlabelled_silos(examples, ["big", "mid", "faq", "small"]) == ["faq", "small"]
    assert unlabelled_silos(examples, ["big", "mid"]) == []
