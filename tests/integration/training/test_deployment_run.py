"""A real federated run as the coordinator starts it: `fedrag train run`, then report, export and serving.

The SuperLink and one SuperNode per silo run as processes on loopback with TLS and
SuperNode authentication; a fourth silo's operator requires DP-SGD, so it refuses this run
(without DP) every round, and the run goes on without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.llm_server import EmbeddedLLMServer
from tests.integration.training.conftest import TRAINING_SILOS, allow_training
from training.adapter_files import ADAPTER_DIR, adapter_config
from training.recorder import CHECKPOINT_FILE, PROGRESS_FILE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), pytest.mark.xdist_group("heavy")]

CONFIG = """
strategy = "ffa-lora"
rounds = 2
output = "out"

[local]
max_examples = 8
max_steps = 2
batch_size = 2
sources = 1
learning_rate = 0.005

[deployment]
min_nodes = 4
round_timeout_s = 600
silos = [
  { name = "cl", dir = "fed/silos/cl" },
  { name = "hpo", dir = "fed/silos/hpo" },
  { name = "mondo", dir = "fed/silos/mondo" },
  { name = "strict", dir = "fed/silos/strict" },
]
"""


def fedrag(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "fedrag"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [str(exe), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=840, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_three_silos_two_rounds_lower_held_out_loss_and_the_adapter_is_served(
    training_federation: Path, tmp_path: Path
) -> None:
    fed = tmp_path / "fed"
    shutil.copytree(training_federation, fed)
    shutil.copytree(fed / "silos" / "cl", fed / "silos" / "strict")
    allow_training(fed / "silos" / "strict", require_record_dp=True)
    (tmp_path / "train.toml").write_text(CONFIG, encoding="utf-8")

    run = fedrag("train", "run", "--config", "train.toml", cwd=tmp_path)

    assert "SuperLink at 127.0.0.1:" in run.stderr  # progress, a line per round, also without a terminal
    assert "round 1: held-out loss before:" in run.stderr and "round 2: held-out loss before:" in run.stderr
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["rounds"] == 2
    before, after = report["held_out_loss_before"], report["held_out_loss"]
    assert before is not None and None not in after
    assert after[-1] < before, f"held-out loss did not fall: {before} -> {after}"
    for nodes in report["nodes"]:
        assert sorted(n["status"] for n in nodes.values()) == ["accepted", "accepted", "accepted", "dropped"]
        assert any("record-level DP" in n["reason"] for n in nodes.values() if n["status"] == "dropped")
    # FFA-LoRA sends B only: a small share of what full fine-tuning would send.
    assert report["bytes_up_per_silo"][0] == report["bytes_down_per_silo"][0]
    assert 0 < report["bytes_up_per_silo"][0] < report["full_fine_tuning_bytes"] / 100
    assert [json.loads(line)["round"] for line in (out / PROGRESS_FILE).read_text().splitlines()] == [1, 2]
    assert (out / CHECKPOINT_FILE).is_file()
    assert adapter_config(out / ADAPTER_DIR)["peft_type"] == "LORA"
    assert not any((fed / "silos" / n / "training" / "ledger.jsonl").exists() for n in TRAINING_SILOS)
    assert not subprocess.run(["pgrep", "-f", str(out)], capture_output=True, check=False).stdout  # all stopped

    shown = fedrag("train", "report", "out", cwd=tmp_path).stdout
    assert "ffa-lora" in shown and "744,960" in shown and "dropped" in shown
    gguf = Path(fedrag("train", "export", "out", "--format", "gguf", cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert gguf.is_file()
    with EmbeddedLLMServer(lora_adapters=[("fed", gguf)], ctx=512) as llm:
        reply = httpx.post(
            f"{llm.base_url}/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "What is asthma?"}],
                "max_tokens": 8,
                "temperature": 0,
                "lora": [{"id": 0, "scale": 1.0}],
            },
            timeout=60,
        )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
