from __future__ import annotations

from pathlib import Path

import pytest

from gateway.privacy_ledger import PrivacyLedger

pytestmark = pytest.mark.unit


def test_spend_survives_a_restart_and_budgets_hold(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.db"
    ledger = PrivacyLedger(path, budget=10.0)
    ledger.charge([("s", "a"), ("s", "b"), ("s", "a")], 4.0)  # a document read twice in one answer pays once
    assert ledger.spent([("s", "a"), ("s", "b"), ("t", "a")]) == {("s", "a"): 4.0, ("s", "b"): 4.0, ("t", "a"): 0.0}
    ledger.close()
    reopened = PrivacyLedger(path, budget=10.0)
    reopened.charge([("s", "a")], 4.0)
    assert reopened.affordable([("s", "a"), ("s", "b"), ("t", "a")], 4.0) == {("s", "b"), ("t", "a")}
    assert reopened.summary() == {"documents_charged": 2, "documents_exhausted": 0, "largest_spend": 8.0}


def test_a_charge_past_a_budget_charges_nobody(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.db", budget=5.0)
    ledger.charge([("s", "a")], 5.0)
    with pytest.raises(ValueError, match="'a'"):
        ledger.charge([("s", "b"), ("s", "a")], 1.0)
    assert ledger.spent([("s", "b")]) == {("s", "b"): 0.0}  # the whole transaction rolled back
    assert ledger.summary()["documents_exhausted"] == 1


def test_a_budget_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        PrivacyLedger(tmp_path / "l.db", budget=0.0)
