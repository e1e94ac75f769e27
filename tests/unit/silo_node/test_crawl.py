"""The crawl guard (T2): distinct cap, self-queries, sweeps, per key and window; restored after a restart."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from federation.config import CrawlSettings, ReleasePolicySettings
from federation.errors import BudgetExhausted, CrawlLimited
from silo_node.policy import AuditLog, Candidate, CrawlGuard, ReleasePolicy, alerts_in_window

pytestmark = pytest.mark.unit

WINDOW = 100.0


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def crawl(**values: Any) -> CrawlSettings:
    base: dict[str, Any] = {"enabled": True, "window_s": WINDOW, "max_distinct_share": 1.0}
    return CrawlSettings(**{**base, **values})


def guard(clock: FakeClock, **values: Any) -> CrawlGuard:
    return CrawlGuard(crawl(**values), clock=clock)


def test_distinct_cap_refuses_the_search_that_would_exceed_it_and_re_released_ids_are_free() -> None:
    clock = FakeClock()
    g = guard(clock, max_distinct_chunks=10, controls=["crawl_limit"])
    g.admit("gw", 0.6, range(0, 6))
    g.admit("gw", 0.6, range(0, 6))  # the same six again: nothing new
    g.admit("gw", 0.6, range(3, 10))  # four new: 10 of 10
    assert g.usage("gw").distinct_released == 10
    with pytest.raises(CrawlLimited) as info:
        g.admit("gw", 0.6, [8, 9, 10])  # one new chunk over the cap
    refusal = info.value
    assert isinstance(refusal, BudgetExhausted) and refusal.status == 429 and refusal.code == "crawl_limit"
    assert refusal.retry_after_s == pytest.approx(WINDOW)  # the oldest chunk leaves the window then
    assert "cap of 10" in refusal.detail
    assert g.usage("gw").distinct_released == 10  # a refused search records nothing
    g.admit("gw", 0.6, [0, 5, 9])  # known chunks are still served


def test_the_window_expiring_lets_the_key_continue() -> None:
    clock = FakeClock()
    g = guard(clock, max_distinct_chunks=5, controls=["crawl_limit"])
    g.admit("gw", 0.5, range(5))
    clock.advance(40)
    with pytest.raises(CrawlLimited) as info:
        g.admit("gw", 0.5, [5])
    assert info.value.retry_after_s == pytest.approx(WINDOW - 40)
    clock.advance(WINDOW - 40)
    g.admit("gw", 0.5, range(5, 10))
    assert g.usage("gw").distinct_released == 5


def test_re_releasing_a_chunk_restarts_its_window() -> None:
    clock = FakeClock()
    g = guard(clock, max_distinct_chunks=2, controls=["crawl_limit"])
    g.admit("gw", 0.5, [1, 2])
    clock.advance(60)
    g.admit("gw", 0.5, [1])  # chunk 1 received again: it stays counted until t+160
    clock.advance(50)  # chunk 2 left the window, chunk 1 did not
    assert g.usage("gw").distinct_released == 1
    g.admit("gw", 0.5, [3])
    with pytest.raises(CrawlLimited):
        g.admit("gw", 0.5, [4])


def test_keys_are_isolated() -> None:
    clock = FakeClock()
    g = guard(clock, max_distinct_chunks=3, max_self_queries=1)
    g.admit("gw-a", 0.5, [1, 2, 3])
    g.admit("gw-a", 0.99, [1])
    with pytest.raises(CrawlLimited):
        g.admit("gw-a", 0.5, [4])
    g.admit("gw-b", 0.5, [4, 5, 6])  # another key has its own cap
    g.admit("gw-b", 0.99, [4])  # and its own self-query allowance
    assert g.usage("gw-a").self_queries == 1 and g.usage("gw-b").self_queries == 1


def test_the_share_cap_applies_when_smaller() -> None:
    g = guard(FakeClock(), max_distinct_chunks=500, max_distinct_share=0.02)
    assert g.cap(1000) == 20 and g.cap(100_000) == 500 and g.cap(10) == 1 and g.cap(None) == 500
    floored = CrawlGuard(crawl(max_distinct_share=0.02), min_cap=10, clock=FakeClock())
    assert floored.cap(50) == 10 and floored.cap(1000) == 20  # a small silo still answers one full search
    assert guard(FakeClock(), controls=["sweep"]).cap(1000) is None


def test_self_queries_are_counted_and_refused_over_the_limit() -> None:
    clock = FakeClock()
    g = guard(clock, max_self_queries=2, self_query_similarity=0.97, controls=["self_query"])
    g.admit("gw", 0.96, [1])  # close, but not on top of a chunk
    g.admit("gw", 0.99, [2])
    clock.advance(10)
    g.admit("gw", 1.0, [3])
    assert g.usage("gw").self_queries == 2
    with pytest.raises(CrawlLimited) as info:
        g.admit("gw", 0.98, [4])
    assert info.value.code == "self_query" and info.value.retry_after_s == pytest.approx(WINDOW - 10)
    g.admit("gw", 0.8, [4])  # an ordinary search still passes
    clock.advance(WINDOW)
    g.admit("gw", 0.99, [5])  # both self-queries left the window


def test_no_self_queries_allowed_at_all() -> None:
    g = guard(FakeClock(), max_self_queries=0, controls=["self_query"])
    with pytest.raises(CrawlLimited) as info:
        g.admit("gw", 0.99, [1])
    assert info.value.retry_after_s is None


def test_sweep_fires_on_a_synthetic_sweep() -> None:
    clock = FakeClock()
    g = guard(clock, sweep_queries=10, sweep_new_share=0.9, sweep_max_score=0.3, controls=["sweep"])
    # Random directions: best score ~0.15, and every search uncovers five chunks never seen.
    for i in range(9):
        g.admit("gw", 0.15, range(5 * i, 5 * i + 5))
        clock.advance(1)
    with pytest.raises(CrawlLimited) as info:
        g.admit("gw", 0.15, range(45, 50))
    assert info.value.code == "sweep" and "sweep" in info.value.detail
    assert info.value.retry_after_s == pytest.approx(WINDOW - 9)  # when the first of the ten leaves


def test_sweep_does_not_fire_on_repeated_related_questions() -> None:
    clock = FakeClock()
    g = guard(clock, sweep_queries=10, controls=["sweep"])
    # Real questions about one topic: they score well and overlap.
    for i in range(60):
        g.admit("gw", 0.55, [i % 7, (i + 1) % 7, 100 + i])
        clock.advance(1)
    # Off-topic, low-scoring questions that keep finding the same passages are not a sweep either.
    for _ in range(30):
        g.admit("gw", 0.1, [1, 2, 3])


def test_a_single_self_query_does_not_count_when_self_query_control_is_off() -> None:
    g = guard(FakeClock(), max_self_queries=0, controls=["crawl_limit"])
    g.admit("gw", 1.0, [1])
    assert g.usage("gw").self_queries == 0


def test_concurrent_searches_cannot_pass_the_cap_together() -> None:
    g = guard(FakeClock(), max_distinct_chunks=50, controls=["crawl_limit"])
    refused: list[int] = []

    def one(i: int) -> None:
        try:
            g.admit("gw", 0.5, [i])
        except CrawlLimited:
            refused.append(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert g.usage("gw").distinct_released == 50 and len(refused) == 150


def candidates(ids: range, score: float = 0.6) -> list[Candidate]:
    return [Candidate(i, f"doc-{i}", f"T{i}", f"passage {i}", score - i * 1e-4, {}) for i in ids]


def test_release_policy_refuses_before_text_leaves_audits_one_alert_and_restores_after_restart(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    path = tmp_path / "audit.jsonl"
    settings = ReleasePolicySettings(max_k=5, crawl=crawl(max_distinct_chunks=12, max_self_queries=1))
    policy = ReleasePolicy(settings, audit=AuditLog(path, clock=clock), clock=clock)
    assert policy.apply("gw", 5, candidates(range(0, 5)), request_id="r1").hits
    assert policy.apply("gw", 5, candidates(range(5, 10), score=0.99), request_id="r2").hits  # a self-query
    with pytest.raises(CrawlLimited) as info:
        policy.apply("gw", 5, candidates(range(10, 15)), request_id="r3", corpus_size=1000)
    assert info.value.code == "crawl_limit"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event"] for r in records] == ["search", "search", "crawl_alert"]
    alert = records[-1]
    assert alert["reason"] == "crawl_limit" and alert["client_id"] == "gw" and alert["request_id"] == "r3"
    assert alert["released"] == [] and alert["distinct_released"] == 10 and alert["distinct_cap"] == 12
    assert "passage" not in path.read_text()  # no text in the audit log
    assert alerts_in_window(records, since=clock.now - WINDOW) == {"gw": {"crawl_limit": 1}}
    assert alerts_in_window(records, since=clock.now + 1) == {}

    clock.advance(30)
    restarted = ReleasePolicy(settings, audit=AuditLog(path, clock=clock), clock=clock)
    assert restarted.crawl is not None
    usage = restarted.crawl.usage("gw")
    assert usage.distinct_released == 10 and usage.self_queries == 1  # the restart reset nothing
    with pytest.raises(CrawlLimited) as again:
        restarted.apply("gw", 5, candidates(range(5, 10), score=0.99), request_id="r4")
    assert again.value.code == "self_query"
    with pytest.raises(CrawlLimited):
        restarted.apply("gw", 5, candidates(range(20, 25)), request_id="r5")
    restarted.apply("gw", 5, candidates(range(0, 5)), request_id="r6")  # what it already holds is free

    clock.advance(WINDOW)
    expired = ReleasePolicy(settings, audit=AuditLog(path, clock=clock), clock=clock)
    assert expired.crawl is not None and expired.crawl.usage("gw").distinct_released == 0


def test_crawl_off_by_default_builds_no_guard() -> None:
    policy = ReleasePolicy(ReleasePolicySettings(), audit=None)
    assert policy.crawl is None
    for i in range(100):
        policy.apply("gw", 10, candidates(range(10 * i, 10 * i + 10), score=1.0), request_id="")
