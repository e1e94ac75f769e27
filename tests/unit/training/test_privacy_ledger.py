from __future__ import annotations

from pathlib import Path

import pytest

from training.local import RecordDP
from training.silo_trainer import PrivacyLedger, projected_epsilon

pytestmark = pytest.mark.unit


def test_the_ledger_sums_a_runs_steps_across_rounds_and_survives_a_torn_line(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "training" / "ledger.jsonl")
    assert ledger.steps("run-1") == 0
    ledger.record("run-1", 1, 5, 1.5)
    ledger.record("run-2", 1, 100, 9.0)
    ledger.record("run-1", 2, 7, 2.1)
    with ledger.path.open("a") as handle:  # a crash while writing the next line
        handle.write('{"run": "run-1", "round": 3, "st')
    assert ledger.steps("run-1") == 12
    assert PrivacyLedger(ledger.path).steps("run-2") == 100


def test_projected_epsilon_grows_with_steps_and_falls_with_noise() -> None:
    dp = RecordDP(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    few, many = projected_epsilon(dp, 0.1, 10), projected_epsilon(dp, 0.1, 100)
    assert 0 < few < many
    assert projected_epsilon(RecordDP(noise_multiplier=2.0), 0.1, 100) < many
