"""The store's lexical (FTS5 BM25) index: matches words and identifiers, follows every change."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from silo_node.store import DocumentRecord, SiloStore


def _doc(doc_id: str, title: str, *chunks: str) -> DocumentRecord:
    vectors = np.ones((len(chunks), 4), dtype=np.float32) / 2
    return DocumentRecord(doc_id, f"hash-{doc_id}-{chunks[0][:8]}", title, "test", {}, list(chunks), vectors)


@pytest.fixture
def store(tmp_path: Path) -> SiloStore:
    store = SiloStore(tmp_path / "silo.db", dimension=4)
    store.upsert_documents(
        [
            _doc("migraine", "Migraine", "Migraine attacks are treated with triptans such as sumatriptan."),
            _doc("paths", "os.path", "os.path.join(a, b) joins path components; see also pathlib.PurePath."),
            _doc("gout", "Gout", "Gout is a form of arthritis caused by urate crystals in the joints (see zymurgy)."),
        ]
    )
    yield store
    store.close()


def _docs(store: SiloStore, text: str) -> list[str]:
    hits = store.lexical_search(text, 10)
    chunks = store.chunks([cid for cid, _ in hits])
    return [chunks[cid].doc_id for cid, _ in hits]


def test_words_match_across_inflections_and_titles_count(store: SiloStore) -> None:
    assert _docs(store, "How is a migraine treatment chosen?")[0] == "migraine"  # treated ~ treatment
    assert _docs(store, "sumatriptan") == ["migraine"]


def test_identifiers_match_by_their_parts(store: SiloStore) -> None:
    assert _docs(store, "What does os.path.join return?")[0] == "paths"
    assert _docs(store, "PurePath") == ["paths"]


def test_scores_are_best_first_and_unknown_words_match_nothing(store: SiloStore) -> None:
    hits = store.lexical_search("urate crystals arthritis joints", 10)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert store.lexical_search("zzyzx quux", 10) == []
    assert store.lexical_search("?!", 10) == []


@pytest.mark.parametrize("text", ['"unbalanced', "NEAR(migraine", "title:gout", "gout*", "a AND OR NOT", "-(x)"])
def test_query_syntax_in_a_question_is_read_as_words(store: SiloStore, text: str) -> None:
    store.lexical_search(text, 10)  # no sqlite3.OperationalError


def _file_holds(tmp_path: Path, *needles: bytes) -> list[bytes]:
    data = b"".join((tmp_path / n).read_bytes() for n in ("silo.db", "silo.db-wal") if (tmp_path / n).exists())
    return [n for n in needles if n in data]


def test_a_deleted_document_leaves_the_lexical_index_and_the_file(store: SiloStore, tmp_path: Path) -> None:
    for i in range(40):  # one transaction each: many index segments, as a silo fed over time has
        store.upsert_documents([_doc(f"filler-{i}", "Filler", f"Filler passage number {i} about nothing.")])
    store.delete_document("gout")
    assert _docs(store, "urate crystals") == []
    # Neither the text nor the index's (stemmed) terms of what was removed remain on disk.
    # ("zymurgy" shares no prefix with another term, so the index stores it whole.)
    assert _file_holds(tmp_path, b"urate", b"zymurgy") == []
    store.upsert_documents([_doc("migraine", "Migraine", "Migraine is prevented with propranolol.")])
    store.purge_removed()  # what the silo runs after an ingestion that replaced documents
    assert _docs(store, "sumatriptan") == [] and _docs(store, "propranolol") == ["migraine"]
    assert _file_holds(tmp_path, b"sumatriptan") == []


def test_a_store_from_before_the_lexical_index_gets_it_on_open(store: SiloStore, tmp_path: Path) -> None:
    store.close()
    db = sqlite3.connect(tmp_path / "silo.db")
    db.execute("DROP TABLE lexical")
    db.execute("DELETE FROM meta WHERE key = 'lexical_version'")
    db.commit()
    db.close()
    reopened = SiloStore(tmp_path / "silo.db", dimension=4)
    try:
        assert _docs(reopened, "urate") == ["gout"]
    finally:
        reopened.close()
