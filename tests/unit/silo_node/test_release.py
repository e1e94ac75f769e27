from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.config import NoisySelectionSettings, ReleasePolicySettings
from federation.errors import BudgetExhausted, ConfigError, ServerError, ValidationFailed
from silo_node.policy import AuditLog, Candidate, EpsilonAccountant, Release, ReleasePolicy

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_candidates(scores: list[float], text: str = "plain passage") -> list[Candidate]:
    return [
        Candidate(
            chunk_id=i,
            doc_id=f"doc-{i // 2}",
            title=f"Title {i}",
            text=f"{text} {i}",
            score=score,
            metadata={"source": f"file{i}.txt"},
        )
        for i, score in enumerate(scores)
    ]


SCORES = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]


def noisy_settings(**noisy: Any) -> ReleasePolicySettings:
    values: dict[str, Any] = {"enabled": True, "epsilon_per_query": 1.0, "budget_per_window": 3.0, "window_s": 600.0}
    values.update(noisy)
    return ReleasePolicySettings(noisy_selection=NoisySelectionSettings(**values))


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_without_dp_releases_exact_top_k_capped_by_max_k(tmp_path: Path) -> None:
    policy = ReleasePolicy(ReleasePolicySettings(max_k=3), audit=AuditLog(tmp_path / "a.jsonl"))
    shuffled = list(reversed(make_candidates(SCORES)))
    release = policy.apply("gw", 5, shuffled, request_id="r1")
    assert isinstance(release, Release)
    assert [h.chunk_id for h in release.hits] == [0, 1, 2]
    assert [h.score for h in release.hits] == [0.95, 0.9, 0.85]
    assert release.k_effective == 3
    assert release.epsilon_spent == 0.0
    assert policy.candidates_needed(5) == 3
    assert policy.candidates_needed(2) == 2


def test_min_score_and_non_finite_scores_never_leave() -> None:
    policy = ReleasePolicy(ReleasePolicySettings(min_score=0.5), audit=None)
    candidates = make_candidates([0.9, 0.49, float("nan"), 0.5, float("inf")])
    release = policy.apply("gw", 10, candidates, request_id="r")
    assert [h.chunk_id for h in release.hits] == [0, 3]


def test_text_is_redacted_titles_too_and_counted() -> None:
    policy = ReleasePolicy(ReleasePolicySettings(redaction_patterns={"staff": r"S-\d{4}"}), audit=None)
    candidate = Candidate(
        chunk_id=7,
        doc_id="d",
        title="Letter for jane@example.org",
        text="Patient MRN: 1234567 seen by S-1234, 500 mg daily.",
        score=0.9,
        metadata={"author": "555-123-4567", "pages": 3},
    )
    release = policy.apply("gw", 1, [candidate], request_id="r")
    hit = release.hits[0]
    assert hit.title == "Letter for [REDACTED:email]"
    assert hit.text == "Patient MRN: [REDACTED:mrn] seen by [REDACTED:staff], 500 mg daily."
    assert hit.metadata == {"author": "[REDACTED:phone]", "pages": 3}
    assert release.redactions == 4
    assert candidate.metadata["author"] == "555-123-4567"


def test_text_withheld_when_release_text_is_false() -> None:
    policy = ReleasePolicy(ReleasePolicySettings(release_text=False), audit=None)
    release = policy.apply("gw", 2, make_candidates([0.9, 0.8], text="MRN: 1234567"), request_id="r")
    assert all(h.text is None for h in release.hits)
    assert release.redactions == 0


def test_redaction_off_releases_text_verbatim() -> None:
    policy = ReleasePolicy(ReleasePolicySettings(redact_pii=False), audit=None)
    release = policy.apply("gw", 1, make_candidates([0.9], text="mail a@b.org"), request_id="r")
    assert release.hits[0].text == "mail a@b.org 0"
    assert release.redactions == 0


def test_invalid_redaction_pattern_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'oops'"):
        ReleasePolicy(ReleasePolicySettings(redaction_patterns={"oops": "[a-"}), audit=None)


def test_k_below_one_is_refused() -> None:
    policy = ReleasePolicy(ReleasePolicySettings(), audit=None)
    with pytest.raises(ValidationFailed):
        policy.apply("gw", 0, make_candidates([0.9]), request_id="r")
    with pytest.raises(ValidationFailed):
        policy.candidates_needed(0)


def test_every_call_is_audited_without_text(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    policy = ReleasePolicy(ReleasePolicySettings(max_k=2), audit=AuditLog(path))
    policy.apply("gw-key-1", 4, make_candidates(SCORES, text="SECRET jane@example.org"), request_id="req-1")
    policy.apply("gw-key-2", 1, [], request_id="req-2")
    records = audit_lines(path)
    assert len(records) == 2
    first = records[0]
    assert first["client_id"] == "gw-key-1"
    assert first["request_id"] == "req-1"
    assert first["requested_k"] == 4
    assert first["k_eff"] == 2
    assert first["epsilon_spent"] == 0.0
    assert first["released"] == [0, 1]
    assert first["redactions"] == 2
    assert first["outcome"] == "released"
    assert isinstance(first["time"], float)
    assert records[1]["released"] == []
    raw = path.read_text()
    assert "SECRET" not in raw and "example.org" not in raw and "Title" not in raw


def test_noisy_candidates_needed_uses_max_candidates() -> None:
    policy = ReleasePolicy(noisy_settings(max_candidates=20), audit=None, rng=np.random.default_rng(0))
    assert policy.candidates_needed(5) == 20
    settings = ReleasePolicySettings(max_k=50, noisy_selection=NoisySelectionSettings(enabled=True, max_candidates=20))
    assert ReleasePolicy(settings, audit=None).candidates_needed(40) == 40


def test_the_old_dp_section_is_refused_with_what_it_became() -> None:
    with pytest.raises(ValueError, match=r"policy\.noisy_selection.*no differential privacy for documents"):
        ReleasePolicySettings.model_validate({"dp": {"enabled": True}})
    # A disabled section (every silo.toml written before the rename has one) changes nothing: it is dropped.
    assert not ReleasePolicySettings.model_validate(
        {"dp": {"enabled": False, "candidate_pool": 50}}
    ).noisy_selection.enabled


def test_dp_charges_and_audits_each_query(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    policy = ReleasePolicy(
        noisy_settings(), audit=AuditLog(path, clock=clock), rng=np.random.default_rng(1), clock=clock
    )
    release = policy.apply("gw", 3, make_candidates(SCORES), request_id="r1")
    assert release.epsilon_spent == 1.0
    assert len(release.hits) == 3
    assert len({h.chunk_id for h in release.hits}) == 3
    scores = [h.score for h in release.hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert policy.accountant is not None
    assert policy.accountant.spent("gw") == pytest.approx(1.0)
    assert audit_lines(path)[0]["epsilon_spent"] == 1.0


def test_dp_budget_exhausted_is_429_before_search_and_audited(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    policy = ReleasePolicy(
        noisy_settings(), audit=AuditLog(path, clock=clock), rng=np.random.default_rng(2), clock=clock
    )
    for n in range(3):
        policy.check_budget("gw")
        policy.apply("gw", 2, make_candidates(SCORES), request_id=f"r{n}")
    with pytest.raises(BudgetExhausted) as early:
        policy.check_budget("gw")
    assert early.value.retry_after_s == pytest.approx(600.0)
    assert [r["outcome"] for r in audit_lines(path)] == ["released"] * 3 + ["budget_exhausted"]
    with pytest.raises(BudgetExhausted) as late:
        policy.apply("gw", 2, make_candidates(SCORES), request_id="r3")
    assert late.value.status == 429
    assert late.value.retry_after_s is not None
    refused = audit_lines(path)[-1]
    assert refused["outcome"] == "budget_exhausted"
    assert refused["released"] == [] and refused["epsilon_spent"] == 0.0
    policy.check_budget("other-gateway")  # budgets are per client
    clock.now += 600
    policy.check_budget("gw")  # the window slid past the spend


def test_dp_budget_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    first = ReleasePolicy(
        noisy_settings(), audit=AuditLog(path, clock=clock), rng=np.random.default_rng(3), clock=clock
    )
    for n in range(3):
        first.apply("gw", 1, make_candidates(SCORES), request_id=f"r{n}")
    clock.now += 10
    second = ReleasePolicy(
        noisy_settings(), audit=AuditLog(path, clock=clock), rng=np.random.default_rng(4), clock=clock
    )
    with pytest.raises(BudgetExhausted):
        second.check_budget("gw")
    clock.now += 600  # outside the window now: a restart forgets it
    third = ReleasePolicy(noisy_settings(), audit=AuditLog(path, clock=clock), clock=clock)
    third.check_budget("gw")


def test_dp_restore_refuses_a_tampered_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    policy = ReleasePolicy(noisy_settings(), audit=AuditLog(path), rng=np.random.default_rng(5))
    for n in range(3):
        policy.apply("gw", 1, make_candidates(SCORES), request_id=f"r{n}")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(ServerError) as info:
        ReleasePolicy(noisy_settings(), audit=AuditLog(path))
    assert info.value.code == "audit_corrupt"


def test_dp_epsilon_above_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        ReleasePolicy(noisy_settings(epsilon_per_query=5.0, budget_per_window=1.0), audit=None)


def test_dp_selection_is_noisy_at_small_epsilon() -> None:
    settings = noisy_settings(epsilon_per_query=0.5, budget_per_window=1e9)
    policy = ReleasePolicy(settings, audit=None, rng=np.random.default_rng(6))
    candidates = make_candidates(SCORES)
    released = {
        frozenset(h.chunk_id for h in policy.apply("gw", 3, candidates, request_id="r").hits) for _ in range(30)
    }
    assert len(released) > 3


def test_dp_converges_to_exact_top_k_at_large_epsilon() -> None:
    settings = noisy_settings(epsilon_per_query=1e7, budget_per_window=1e12)
    policy = ReleasePolicy(settings, audit=None, rng=np.random.default_rng(7))
    candidates = make_candidates(SCORES)
    for _ in range(20):
        release = policy.apply("gw", 3, candidates, request_id="r")
        assert [h.chunk_id for h in release.hits] == [0, 1, 2]
        assert [h.score for h in release.hits] == pytest.approx([0.95, 0.9, 0.85], abs=1e-3)


def test_noisy_draws_only_from_passages_above_the_public_threshold() -> None:
    settings = noisy_settings(epsilon_per_query=0.01, budget_per_window=1e9, relevance_threshold=0.75)
    policy = ReleasePolicy(settings, audit=None, rng=np.random.default_rng(8))
    for _ in range(30):
        release = policy.apply("gw", 2, make_candidates(SCORES), request_id="r")
        assert {h.chunk_id for h in release.hits} <= {0, 1, 2, 3}  # the scores 0.95 to 0.8
        assert all(0.0 <= h.score <= 1.0 for h in release.hits)  # clipped scores, clipped noise


def test_negative_similarities_count_as_zero_for_the_threshold() -> None:
    settings = noisy_settings(relevance_threshold=0.0, budget_per_window=1e9).model_copy(update={"min_score": -1.0})
    policy = ReleasePolicy(settings, audit=None)
    release = policy.apply("gw", 3, make_candidates([-0.9, -0.5]), request_id="r")
    assert {h.chunk_id for h in release.hits} == {0, 1}
    assert all(0.0 <= h.score <= 1.0 for h in release.hits)


def test_dp_with_empty_pool_still_charges() -> None:
    policy = ReleasePolicy(noisy_settings(), audit=None, rng=np.random.default_rng(9))
    release = policy.apply("gw", 3, [], request_id="r")
    assert release.hits == [] and release.epsilon_spent == 1.0


def test_injected_accountant_is_used() -> None:
    clock = FakeClock()
    accountant = EpsilonAccountant(budget=1.0, window_s=60.0, clock=clock)
    policy = ReleasePolicy(noisy_settings(), audit=None, accountant=accountant, rng=np.random.default_rng(10))
    policy.apply("gw", 1, make_candidates(SCORES), request_id="r")
    with pytest.raises(BudgetExhausted):
        policy.apply("gw", 1, make_candidates(SCORES), request_id="r")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    scores=st.lists(st.floats(-1, 1), max_size=30),
    k=st.integers(1, 40),
    max_k=st.integers(1, 20),
    min_score=st.floats(-1, 1),
    use_dp=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_release_invariants(scores: list[float], k: int, max_k: int, min_score: float, use_dp: bool, seed: int) -> None:
    noisy = NoisySelectionSettings(enabled=use_dp, budget_per_window=1e9)
    policy = ReleasePolicySettings(max_k=max_k, min_score=min_score, noisy_selection=noisy)
    policy = ReleasePolicy(policy, audit=None, rng=np.random.default_rng(seed))
    candidates = make_candidates(scores)
    release = policy.apply("gw", k, candidates, request_id="r")
    threshold = noisy.relevance_threshold if use_dp else -1.0
    eligible = {c.chunk_id for c in candidates if c.score >= min_score and max(c.score, 0.0) >= threshold}
    ids = [h.chunk_id for h in release.hits]
    assert release.k_effective == min(k, max_k)
    assert len(ids) == len(set(ids)) == min(release.k_effective, len(eligible))
    assert set(ids) <= eligible
    released_scores = [h.score for h in release.hits]
    assert released_scores == sorted(released_scores, reverse=True)
    if not use_dp:
        ranked = sorted(candidates, key=lambda c: (-c.score, c.chunk_id))
        assert ids == [c.chunk_id for c in ranked if c.chunk_id in eligible][: release.k_effective]


def test_a_chunk_released_again_is_redacted_the_same_through_a_small_cache(monkeypatch) -> None:
    from silo_node.policy import release as release_module

    monkeypatch.setattr(release_module, "REDACTED_CACHE_SIZE", 3)
    policy = ReleasePolicy(ReleasePolicySettings(max_k=10), audit=None)
    candidates = make_candidates(SCORES[:5], text="call 555-123-4567 or mail a.b@example.org")
    first = policy.apply("gw", 5, candidates, request_id="r1")
    again = policy.apply("gw", 5, candidates, request_id="r2")
    assert [h.text for h in again.hits] == [h.text for h in first.hits]
    assert first.redactions == again.redactions == 10
    assert all("555-123-4567" not in (h.text or "") and "[REDACTED:phone]" in (h.text or "") for h in again.hits)
    again.hits[0].metadata["source"] = "changed by a caller"
    assert policy.apply("gw", 1, candidates, request_id="r3").hits[0].metadata["source"] == "file0.txt"
