"""One contract for both privacy ledgers (SQLite in one gateway, Redis shared by several)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation.errors import StateStoreUnavailable
from federation.redis_state import RedisState
from federation.secrets import Secret
from gateway.privacy_ledger import DocumentLedger, PrivacyLedger
from gateway.redis_stores import RedisPrivacyLedger
from tests.conftest import RedisServer

pytestmark = pytest.mark.unit


@dataclass
class Ledgers:
    """Opens ledgers of one kind on one store; ``restart`` restarts the store (a crash for Redis)."""

    open: Callable[[float], DocumentLedger]
    restart: Callable[[], None]


@pytest.fixture(params=["sqlite", "redis"])
def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledgers]:
    if request.param == "sqlite":
        path = tmp_path / "state" / "ledger.db"
        yield Ledgers(open=lambda budget: PrivacyLedger(path, budget=budget), restart=lambda: None)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    state = RedisState(Secret(server.url), namespace="test-fed")
    yield Ledgers(open=lambda budget: RedisPrivacyLedger(state, budget=budget), restart=server.restart)
    state.close()


def test_spend_survives_a_restart_and_budgets_hold(ledgers: Ledgers) -> None:
    ledger = ledgers.open(10.0)
    ledger.charge([("s", "a"), ("s", "b"), ("s", "a")], 4.0)  # a document read twice in one answer pays once
    assert ledger.spent([("s", "a"), ("s", "b"), ("t", "a")]) == {("s", "a"): 4.0, ("s", "b"): 4.0, ("t", "a"): 0.0}
    ledger.close()
    ledgers.restart()  # Redis: killed and started again; appendfsync always kept every charge
    reopened = ledgers.open(10.0)
    reopened.charge([("s", "a")], 4.0)
    assert reopened.affordable([("s", "a"), ("s", "b"), ("t", "a")], 4.0) == {("s", "b"), ("t", "a")}
    assert reopened.summary() == {"documents_charged": 2, "documents_exhausted": 0, "largest_spend": 8.0}


def test_a_charge_past_a_budget_charges_nobody(ledgers: Ledgers) -> None:
    ledger = ledgers.open(5.0)
    ledger.charge([("s", "a")], 5.0)
    with pytest.raises(ValueError, match="'a'"):
        ledger.charge([("s", "b"), ("s", "a")], 1.0)
    assert ledger.spent([("s", "b")]) == {("s", "b"): 0.0}  # the whole transaction rolled back
    assert ledger.summary()["documents_exhausted"] == 1


def test_two_gateways_share_one_budget_in_redis(redis_server: RedisServer) -> None:
    states = [RedisState(Secret(redis_server.url), namespace="test-fed") for _ in range(2)]
    first, second = (RedisPrivacyLedger(state, budget=10.0) for state in states)
    first.charge([("s", "a")], 8.0)
    assert second.spent([("s", "a")]) == {("s", "a"): 8.0}
    assert second.affordable([("s", "a"), ("s", "b")], 4.0) == {("s", "b")}
    with pytest.raises(ValueError):  # checked by first before second spent it: the charge itself refuses
        second.charge([("s", "b"), ("s", "a")], 4.0)
    assert first.spent([("s", "b")]) == {("s", "b"): 0.0}
    states.append(RedisState(Secret(redis_server.url), namespace="other-fed"))
    assert RedisPrivacyLedger(states[-1], budget=10.0).spent([("s", "a")]) == {("s", "a"): 0.0}  # its own budgets
    for state in states:
        state.close()


def test_a_budget_must_be_positive(ledgers: Ledgers) -> None:
    with pytest.raises(ValueError):
        ledgers.open(0.0)


def test_redis_down_is_a_503_for_every_call(redis_server: RedisServer) -> None:
    state = RedisState(Secret(redis_server.url), namespace="test-fed")
    ledger = RedisPrivacyLedger(state, budget=10.0)
    ledger.charge([("s", "a")], 1.0)
    redis_server.kill()
    for call in (
        lambda: ledger.spent([("s", "a")]),
        lambda: ledger.affordable([("s", "a")], 1.0),
        lambda: ledger.charge([("s", "a")], 1.0),
        ledger.summary,
    ):
        with pytest.raises(StateStoreUnavailable) as info:
            call()
        assert info.value.status == 503 and info.value.code == "state_store_unavailable"
    state.close()
