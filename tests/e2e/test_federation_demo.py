"""`fedrag demo` as a new user runs it: five silos, the embedded LLM and the gateway as processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("heavy")]  # one after another on one worker


def run_demo(workdir: Path, *flags: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "federation", "demo", str(workdir), "--per-corpus", "30", *flags],
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
    # The second run answers with a federated LoRA adapter (as `fedrag train run` exports it) and rebuilds nothing.
    second = run_demo(tmp_path / "demo", "--lora", str(_exported_adapter(tmp_path / "adapter")))
    assert "federation running: 5 silos" in second and "routing (centroid)" in second
    assert "answers come from the LoRA adapter" in second and "(model fedrag:demo-adapter)" in second
    assert "adapter 0: demo-adapter" in (tmp_path / "demo" / "logs" / "llm.log").read_text()
    assert second.count("claims checked against their sources") == 2
    assert (tmp_path / "demo" / "build.log").read_text().count("added 0, updated 0") == 5  # nothing re-embedded


def _exported_adapter(root: Path) -> Path:
    """A seeded r=8 LoRA on q/v of the embedded model (B = 0, peft's start), exported for llama.cpp."""
    peft = pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    from training.base_model import load_base_model
    from training.export import export_llamacpp_lora

    model, _ = load_base_model()
    torch.manual_seed(0)
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    adapted.save_pretrained(root / "peft")
    return export_llamacpp_lora(root / "peft", root / "adapter.gguf")


def test_a_missing_adapter_file_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "federation", "demo", str(tmp_path / "demo"), "--lora", str(tmp_path / "no.gguf")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "demo").exists()  # refused before anything was built
