"""A node killed at any moment during ingestion restarts with every acknowledged document searchable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from federation.config import load_silo_settings
from silo_node.service import INDEX_FILE, SiloService
from tests.conftest import Federation

pytestmark = pytest.mark.integration

TOPICS = ["kidney", "liver", "heart", "lung", "skin", "bone", "blood", "nerve", "eye", "ear"]


def write_corpus(path: Path, n: int) -> dict[str, str]:
    texts = {}
    with path.open("w") as fh:
        for i in range(n):
            doc_id = f"case-{i:04d}"
            topic = TOPICS[i % 10]
            text = f"Case report {i}: a patient with a rare {topic} condition number {i} treated with drug {i * 7}."
            texts[doc_id] = text
            fh.write(json.dumps({"id": doc_id, "title": f"Case {i}", "text": text}) + "\n")
    return texts


def test_kill_during_ingest_loses_no_acknowledged_document(federation: Federation, encoder, tmp_path: Path) -> None:
    corpus = tmp_path / "cases.jsonl"
    texts = write_corpus(corpus, 400)
    silo_dir = federation.silo_dir("beta")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FEDRAG_SILO_CHUNKING__BATCH_SIZE": "2", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "federation", "silo", "ingest", str(silo_dir), str(corpus), "--verbose"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    acked: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("stored "):
            acked.append(line.split()[1])
        if len(acked) >= 45:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "ingestion finished before it could be killed"
    assert len(acked) >= 45

    service = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=encoder).open()
    try:
        assert service.store.integrity_ok()
        stored = {d.doc_id for d in service.documents(offset=0, limit=1000)}
        assert set(acked) <= stored
        assert len(service.index) == service.store.counts()[1]  # every stored chunk is searchable
        for doc_id in acked[:: max(1, len(acked) // 8)]:
            _, ids = service.index.search(encoder.encode([texts[doc_id]])[0], 1)
            assert service.store.chunks([int(ids[0][0])])[int(ids[0][0])].doc_id == doc_id
        # finishing the ingestion stores the rest and re-embeds nothing already acknowledged
        from silo_node.ingest import iter_documents

        report = service.ingest(iter_documents([corpus], max_file_bytes=10**7))
        assert report.unchanged >= len(acked) and report.unchanged + report.added + report.updated == 400
        assert service.store.counts()[0] == 400
    finally:
        service.close()


def test_corrupt_index_snapshot_is_rebuilt_from_the_store(federation: Federation, encoder) -> None:
    silo_dir = federation.silo_dir()
    snapshot = silo_dir / INDEX_FILE
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    service = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=encoder).open()
    try:
        assert service.index.rebuilt_on_open
        assert len(service.index) == service.store.counts()[1] > 0
        _, ids = service.index.search(encoder.encode(["asthma inhaler wheezing"])[0], 1)
        assert "asthma" in service.store.chunks([int(ids[0][0])])[int(ids[0][0])].doc_id
    finally:
        service.close()
    reopened = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=encoder).open()
    try:
        assert not reopened.index.rebuilt_on_open  # the rebuilt snapshot was saved and verifies
    finally:
        reopened.close()


def test_deleted_document_leaves_results_and_disk(federation: Federation, encoder) -> None:
    silo_dir = federation.silo_dir()
    service = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=encoder).open()
    try:
        query = encoder.encode(["patient note follow-up appointment"])[0]
        top_id = int(service.index.search(query, 1)[1][0][0])
        top = service.store.chunks([top_id])[top_id]
        target, chunk_text = top.doc_id, top.text
        service.delete(target)
        _, ids = service.index.search(query, 50)
        assert target not in {c.doc_id for c in service.store.chunks([int(i) for i in ids[0] if i >= 0]).values()}
    finally:
        service.close()
    needle = chunk_text[:40].encode()
    for name in ("silo.db", "silo.db-wal", INDEX_FILE):
        path = silo_dir / name
        if path.exists():
            assert needle not in path.read_bytes(), name
