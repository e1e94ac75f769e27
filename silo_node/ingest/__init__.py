"""Ingestion input: read a silo's source files into documents and split them into chunks.

``iter_documents`` turns files and directories (``.txt``, ``.md``/``.markdown``, ``.rst``,
``.html``/``.htm``, ``.jsonl``) into ``SourceDocument`` values and reports each file or JSONL
line it leaves out as an ``IngestProblem``; ``chunk_text`` splits a document's text into
passages for embedding.

The packaged sample corpus (``sample_data_dir()``) is a small, original set of short
general-knowledge articles on common medical conditions, written for the demo and tests:
Markdown and plain-text files plus one JSONL file of several records with
``{"specialty": ...}`` metadata. It is not medical advice. One document (the clinic note in
``hypertension.md``) contains a fictitious patient paragraph with fake personal data (an
e-mail address, a phone number, a record number and a date of birth) so that the silo's
redaction policy has something to show. Every file in the folder is corpus: it is ingested
as a whole.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from silo_node.ingest.chunking import chunk_text
from silo_node.ingest.readers import SUPPORTED_SUFFIXES, IngestProblem, SourceDocument, iter_documents, make_document

__all__ = [
    "SUPPORTED_SUFFIXES",
    "IngestProblem",
    "SourceDocument",
    "chunk_text",
    "iter_documents",
    "make_document",
    "sample_data_dir",
]


def sample_data_dir() -> Path:
    """Return the directory of the packaged sample corpus.

    Returns:
        The ``silo_node/sample_data`` directory of the installed package.

    Raises:
        FileNotFoundError: If the package was installed without its data files.
    """
    path = Path(str(files("silo_node"))) / "sample_data"
    if not path.is_dir():
        raise FileNotFoundError(f"sample corpus not found at {path}; reinstall fedrag-serve with its package data")
    return path
