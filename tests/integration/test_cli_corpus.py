"""``fedrag silo ingest --corpus`` and ``fedrag silo corpora``, run as an operator would (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def fedrag(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "federation", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300
    )
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def silo(tmp_path: Path) -> Path:
    """An empty silo, created with the CLI."""
    fedrag("keys", "new", tmp_path / "keys/silo")
    fed = tmp_path / "federation.toml"
    fedrag("federation", "init", fed, "--name", "hospitals")
    fedrag(
        "silo",
        "init",
        tmp_path / "silo",
        "--federation",
        fed,
        "--key",
        tmp_path / "keys/silo/private.pem",
        "--name",
        "docs",
    )
    return tmp_path / "silo"


def test_a_packaged_corpus_sample_is_ingested_by_name_and_unchanged_the_second_time(silo: Path) -> None:
    first = fedrag("silo", "ingest", silo, "--corpus", "pydocs:40").stdout
    assert "added 40, updated 0, unchanged 0 documents" in first
    again = fedrag("silo", "ingest", silo, "--corpus", "pydocs:40").stdout  # Same ids, same hashes.
    assert "added 0, updated 0, unchanged 40 documents" in again

    nothing = fedrag("silo", "ingest", silo, ok=False)
    assert nothing.returncode == 1 and "--corpus" in nothing.stderr and "Traceback" not in nothing.stderr
    unknown = fedrag("silo", "ingest", silo, "--corpus", "pubmed:10", ok=False)
    assert unknown.returncode == 1 and "unknown corpus 'pubmed'" in unknown.stderr and "pydocs" in unknown.stderr


def test_include_adds_a_named_document_to_the_sample_and_an_unknown_one_is_a_clear_error(silo: Path) -> None:
    out = fedrag("silo", "ingest", silo, "--corpus", "pydocs:5", "--include", "python:json.loads", "-v").stdout
    assert "added 6, updated 0, unchanged 0 documents" in out and "stored python:json.loads" in out
    # Ingesting it again changes nothing: tests/e2e/test_federation_demo.py (the demo's second run).
    missing = fedrag("silo", "ingest", silo, "--corpus", "pydocs:5", "--include", "python:nope.nothing", ok=False)
    assert missing.returncode == 1 and "python:nope.nothing" in missing.stderr and "Traceback" not in missing.stderr


def test_corpora_lists_every_corpus_with_its_status() -> None:
    out = fedrag("silo", "corpora").stdout
    for name in ("cl", "hpo", "mondo", "pydocs", "uberon", "wiki"):
        assert f"│ {name} " in out
    assert f"ok: {len(_pydocs_in_fresh_process())} documents" in out


def test_pydocs_is_the_same_in_another_process() -> None:
    """Docstrings and signatures come from live objects: nothing process-specific may leak into them."""
    script = (
        "from silo_node.corpora import load_corpus\nfor d in load_corpus('pydocs'): print(d.doc_id, d.content_hash)\n"
    )
    # Compared between fresh processes: pytest itself patches stdlib objects (warnings, logging) in this one.
    assert _pydocs_in_fresh_process(script, seed="12345") == _pydocs_in_fresh_process(script, seed="999")


def _pydocs_in_fresh_process(
    script: str = "from silo_node.corpora import load_corpus\nfor d in load_corpus('pydocs'): print(d.doc_id)\n",
    seed: str = "0",
) -> list[str]:
    env = {**ENV, "PYTHONHASHSEED": seed}
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert other.returncode == 0, other.stderr
    return other.stdout.splitlines()
