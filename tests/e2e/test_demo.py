"""The demo path as a new user runs it: `fedrag silo demo` builds, serves, searches, and reuses on a second run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def run_demo(workdir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "federation", "silo", "demo", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_demo_builds_searches_and_reuses(tmp_path: Path) -> None:
    first = run_demo(tmp_path / "demo")
    assert "documents added" in first and "16 documents added" in first
    assert "stroke.md" in first and "type-2-diabetes.md" in first
    assert "[REDACTED:" in first and "jane.doe@example.org" not in first
    assert "unsigned request refused: HTTP 401 signature_missing" in first
    second = run_demo(tmp_path / "demo")
    assert "0 documents added, 16 unchanged" in second
    assert "stroke.md" in second
