"""`fedrag demo` as a new user runs it: five silos, the embedded LLM and the gateway as processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("heavy")]  # one after another on one worker


def run_demo(workdir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "federation", "demo", str(workdir), "--per-corpus", "30"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_whole_federation_answers_with_citations_and_a_trace(tmp_path: Path) -> None:
    first = run_demo(tmp_path / "demo")
    assert "federation running: 5 silos" in first
    assert "Q: What is hypertrophic cardiomyopathy?" in first and "Q: How do I parse a JSON string" in first
    assert first.count("sources") >= 2 and first.count("routing (centroid)") == 2
    medical, code = first.split("Q: How do I parse a JSON string")
    assert re.search(r"(diseases|phenotypes|anatomy)\s*│\s*yes", medical)  # routed to a medical silo
    assert re.search(r"python-docs\s*│\s*yes", code)  # the code question went to the Python docs silo
    assert "python:" in code
    assert "timings: embed" in first
    for part in (medical, code):  # each answer cites a retrieved source, its claims are checked, nothing repeats
        assert re.search(r"│\s*\d+\s*│\s*yes\s*│", part), part[-3000:]
        assert "claims checked against their sources" in part
        panel = part.split("─ answer ─", 1)[1].split("╰", 1)[0]
        lines = [line.strip("│ ") for line in panel.splitlines() if line.strip("│ ")]
        assert lines and len(lines) == len(set(lines)), panel
    build_log = (tmp_path / "demo" / "build.log").read_text()
    # anatomy holds two corpora; diseases and python-docs also the document their demo question is about
    assert build_log.count("added 30,") == 2 and build_log.count("added 31,") == 2 and build_log.count("added 60,") == 1
    second = run_demo(tmp_path / "demo")
    assert "federation running: 5 silos" in second and "routing (centroid)" in second
    assert (tmp_path / "demo" / "build.log").read_text().count("added 0, updated 0") == 5  # nothing re-embedded
