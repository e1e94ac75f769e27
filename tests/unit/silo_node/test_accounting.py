from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import BudgetExhausted
from silo_node.policy import EpsilonAccountant

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_charges_add_up_per_client() -> None:
    clock = FakeClock()
    acc = EpsilonAccountant(budget=5.0, window_s=60.0, clock=clock)
    acc.charge("gw-a", 1.5)
    acc.charge("gw-a", 2.0)
    acc.charge("gw-b", 0.5)
    assert acc.spent("gw-a") == pytest.approx(3.5)
    assert acc.spent("gw-b") == pytest.approx(0.5)
    assert acc.spent("gw-c") == 0.0
    assert acc.remaining("gw-a") == pytest.approx(1.5)


def test_refusal_is_429_with_retry_after_and_charges_nothing() -> None:
    clock = FakeClock()
    acc = EpsilonAccountant(budget=3.0, window_s=100.0, clock=clock)
    acc.charge("gw", 1.0)  # expires at +100
    clock.advance(30)
    acc.charge("gw", 1.0)  # expires at +130
    clock.advance(30)
    acc.charge("gw", 1.0)  # expires at +160
    clock.advance(10)  # now +70
    with pytest.raises(BudgetExhausted) as info:
        acc.charge("gw", 1.0)
    err = info.value
    assert err.status == 429
    assert err.code == "budget_exhausted"
    assert err.retry_after_s == pytest.approx(30.0)  # the first charge expires at +100
    assert "retry after 30 s" in err.detail
    assert acc.spent("gw") == pytest.approx(3.0)  # the refused charge was not recorded


def test_retry_after_counts_as_many_expiries_as_the_request_needs() -> None:
    clock = FakeClock()
    acc = EpsilonAccountant(budget=3.0, window_s=100.0, clock=clock)
    for _ in range(3):
        acc.charge("gw", 1.0)
        clock.advance(10)
    with pytest.raises(BudgetExhausted) as info:
        acc.charge("gw", 2.0)
    # Needs two charges to expire: the second expires at +110, now is +30.
    assert info.value.retry_after_s == pytest.approx(80.0)


def test_spend_expires_after_the_window() -> None:
    clock = FakeClock()
    acc = EpsilonAccountant(budget=2.0, window_s=60.0, clock=clock)
    acc.charge("gw", 2.0)
    with pytest.raises(BudgetExhausted) as info:
        acc.charge("gw", 0.1)
    assert info.value.retry_after_s is not None
    clock.advance(59.9)
    assert acc.spent("gw") == pytest.approx(2.0)
    clock.advance(info.value.retry_after_s - 59.9)
    assert acc.spent("gw") == 0.0
    acc.charge("gw", 2.0)  # a whole new budget


def test_request_above_the_whole_budget_has_no_retry_after() -> None:
    acc = EpsilonAccountant(budget=1.0, window_s=60.0, clock=FakeClock())
    with pytest.raises(BudgetExhausted) as info:
        acc.charge("gw", 1.5)
    assert info.value.retry_after_s is None


def test_check_refuses_like_charge_but_spends_nothing() -> None:
    acc = EpsilonAccountant(budget=1.0, window_s=60.0, clock=FakeClock())
    acc.check("gw", 1.0)
    assert acc.spent("gw") == 0.0
    acc.charge("gw", 1.0)
    with pytest.raises(BudgetExhausted):
        acc.check("gw", 0.5)


def test_float_sums_do_not_refuse_an_exactly_full_budget() -> None:
    acc = EpsilonAccountant(budget=1.0, window_s=60.0, clock=FakeClock())
    for _ in range(10):
        acc.charge("gw", 0.1)
    with pytest.raises(BudgetExhausted):
        acc.charge("gw", 0.1)


def test_restore_replays_history_within_the_window_only() -> None:
    clock = FakeClock()
    acc = EpsilonAccountant(budget=3.0, window_s=100.0, clock=clock)
    acc.restore("gw", clock.now - 150, 2.0)  # already expired: ignored
    acc.restore("gw", clock.now - 20, 1.0)
    acc.restore("gw", clock.now - 90, 2.0)  # out of order is fine
    assert acc.spent("gw") == pytest.approx(3.0)
    with pytest.raises(BudgetExhausted) as info:
        acc.charge("gw", 1.0)
    assert info.value.retry_after_s == pytest.approx(10.0)
    clock.advance(10)
    acc.charge("gw", 1.0)


@pytest.mark.parametrize(("budget", "window"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (float("nan"), 1.0)])
def test_invalid_construction(budget: float, window: float) -> None:
    with pytest.raises(ValueError):
        EpsilonAccountant(budget, window)


def test_negative_or_nan_epsilon_is_refused() -> None:
    acc = EpsilonAccountant(budget=1.0, window_s=1.0)
    with pytest.raises(ValueError):
        acc.charge("gw", -0.1)
    with pytest.raises(ValueError):
        acc.restore("gw", 0.0, float("nan"))


def test_concurrent_charges_never_overspend() -> None:
    acc = EpsilonAccountant(budget=10.0, window_s=3600.0, clock=FakeClock())
    accepted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            try:
                acc.charge("gw", 0.25)
            except BudgetExhausted:
                continue
            with lock:
                accepted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 40
    assert acc.spent("gw") == pytest.approx(10.0)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    steps=st.lists(st.tuples(st.floats(0, 50), st.floats(0.01, 3)), min_size=1, max_size=40),
    budget=st.floats(1, 10),
)
def test_spend_within_any_window_never_exceeds_budget(steps: list[tuple[float, float]], budget: float) -> None:
    clock = FakeClock(0.0)
    window = 60.0
    acc = EpsilonAccountant(budget=budget, window_s=window, clock=clock)
    accepted: list[tuple[float, float]] = []
    for wait, eps in steps:
        clock.advance(wait)
        try:
            acc.charge("gw", eps)
        except BudgetExhausted as err:
            live = sum(e for t, e in accepted if t > clock.now - window)
            assert live + eps > budget - 1e-6  # refused only when it would overspend
            if eps > budget:
                assert err.retry_after_s is None  # can never be afforded
                continue
            assert err.retry_after_s is not None
            assert 0 <= err.retry_after_s <= window
            later = sum(e for t, e in accepted if t > clock.now + err.retry_after_s - window + 1e-9)
            assert later + eps <= budget + 1e-6  # retrying then would succeed
            continue
        accepted.append((clock.now, eps))
        live = sum(e for t, e in accepted if t > clock.now - window)
        assert live <= budget + 1e-6
        assert acc.spent("gw") == pytest.approx(live)
