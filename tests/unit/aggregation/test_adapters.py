from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from aggregation import (
    LORA_A_SUFFIX,
    LORA_B_SUFFIX,
    UpdateLimits,
    Verdict,
    average_prompts,
    check_fresh_lora,
    check_update,
    cluster_prompts,
    fedavg_lora,
    fedavg_lora_error,
    ffa_lora_a,
    ffa_lora_aggregate,
    flora_stack,
    lora_delta,
    pair_lora_names,
)
from federation.errors import ConfigError, ValidationFailed

pytestmark = pytest.mark.unit

Q = "base_model.model.model.layers.0.self_attn.q_proj"
V = "base_model.model.model.layers.0.self_attn.v_proj"
SHAPES = {Q: (24, 16), V: (8, 16)}  # module → (out, in)


def adapter(rng: np.random.Generator, rank: int = 4, a: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    for module, (out, fan_in) in SHAPES.items():
        state[module + LORA_A_SUFFIX] = a[module] if a else rng.normal(size=(rank, fan_in))
        state[module + LORA_B_SUFFIX] = rng.normal(size=(out, rank))
    return state


def rel_error(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    num = sum(float(np.sum((actual[m] - expected[m]) ** 2)) for m in expected)
    den = sum(float(np.sum(expected[m] ** 2)) for m in expected)
    return math.sqrt(num / den)


def weighted_delta(
    states: list[dict[str, np.ndarray]], weights: list[float], scalings: list[float]
) -> dict[str, np.ndarray]:
    w = np.asarray(weights) / sum(weights)
    deltas = [lora_delta(s, sc) for s, sc in zip(states, scalings, strict=True)]
    return {m: sum(wi * d[m] for wi, d in zip(w, deltas, strict=True)) for m in SHAPES}


# -- names ---------------------------------------------------------------------------------


def test_lora_names_pair_per_module() -> None:
    pairs = pair_lora_names([V + LORA_B_SUFFIX, Q + LORA_A_SUFFIX, Q + LORA_B_SUFFIX, V + LORA_A_SUFFIX])
    assert list(pairs) == [Q, V]
    assert pairs[Q].a == Q + LORA_A_SUFFIX and pairs[Q].b == Q + LORA_B_SUFFIX


@pytest.mark.parametrize(
    "names", [[Q + LORA_A_SUFFIX], [Q + LORA_A_SUFFIX, Q + LORA_B_SUFFIX, "prompt_embeddings"], [LORA_A_SUFFIX]]
)
def test_unpaired_or_foreign_names_are_refused(names: list[str]) -> None:
    with pytest.raises(ValidationFailed):
        pair_lora_names(names)


# -- FedAvg of LoRA ------------------------------------------------------------------------


def test_fedavg_lora_is_inexact_on_random_clients_and_says_by_how_much() -> None:
    rng = np.random.default_rng(0)
    states, weights = [adapter(rng) for _ in range(3)], [10.0, 20.0, 30.0]
    averaged = fedavg_lora(states, weights)
    np.testing.assert_allclose(
        averaged[Q + LORA_A_SUFFIX],
        sum(w * s[Q + LORA_A_SUFFIX] for w, s in zip([1 / 6, 2 / 6, 3 / 6], states, strict=True)),
    )
    error = fedavg_lora_error(states, weights)
    expected = rel_error(lora_delta(averaged), weighted_delta(states, weights, [1.0] * 3))
    assert error == pytest.approx(expected)
    assert error > 0.1


def test_fedavg_lora_error_is_zero_when_clients_share_a() -> None:
    rng = np.random.default_rng(1)
    shared = {m: rng.normal(size=(4, fan_in)) for m, (_, fan_in) in SHAPES.items()}
    states = [adapter(rng, a=shared) for _ in range(3)]
    assert fedavg_lora_error(states, [1, 2, 3]) < 1e-12


# -- FFA-LoRA ------------------------------------------------------------------------------


def test_ffa_a_is_deterministic_per_module_and_seed_and_peft_shaped() -> None:
    a = ffa_lora_a(Q, (4, 16), seed=7)
    assert a.dtype == np.float32 and a.shape == (4, 16)
    np.testing.assert_array_equal(a, ffa_lora_a(Q, (4, 16), seed=7))
    assert not np.array_equal(a, ffa_lora_a(V, (4, 16), seed=7))
    assert not np.array_equal(a, ffa_lora_a(Q, (4, 16), seed=8))
    assert np.abs(a).max() <= 1 / math.sqrt(16)


def test_ffa_a_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = f"from aggregation.adapters import ffa_lora_a; print(ffa_lora_a({Q!r}, (2, 3), 7).tolist())"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    )
    assert other.stdout.strip() == str(ffa_lora_a(Q, (2, 3), 7).tolist())


def test_ffa_lora_aggregation_is_exact() -> None:
    rng = np.random.default_rng(2)
    a = {m: ffa_lora_a(m, (4, fan_in), seed=3).astype(np.float64) for m, (_, fan_in) in SHAPES.items()}
    clients = [adapter(rng, a=a) for _ in range(4)]
    weights = [5.0, 1.0, 7.0, 3.0]
    b_only = [{n: v for n, v in c.items() if n.endswith(LORA_B_SUFFIX)} for c in clients]
    merged = ffa_lora_aggregate(b_only, weights) | {m + LORA_A_SUFFIX: a[m] for m in SHAPES}
    assert rel_error(lora_delta(merged, 2.0), weighted_delta(clients, weights, [2.0] * 4)) < 1e-5


def test_ffa_lora_refuses_a_in_the_update() -> None:
    with pytest.raises(ValidationFailed, match="lora_B"):
        ffa_lora_aggregate([adapter(np.random.default_rng(0))], [1.0])


# -- FLoRA ---------------------------------------------------------------------------------


def test_flora_stacking_is_exact_with_heterogeneous_ranks_on_top_of_the_previous_stack() -> None:
    rng = np.random.default_rng(3)
    previous = adapter(rng, rank=5)
    clients = [adapter(rng, rank=r) for r in (2, 4, 8)]
    weights, scalings = [3.0, 1.0, 2.0], [16 / 2, 16 / 4, 16 / 8]
    stack = flora_stack(previous, clients, weights, scalings, max_rank=64)
    expected = {m: lora_delta(previous)[m] + d for m, d in weighted_delta(clients, weights, scalings).items()}
    assert rel_error(lora_delta(stack.arrays), expected) < 1e-5
    assert stack.ranks == {Q: 5 + 14, V: 5 + 14}
    assert stack.truncation_error == 0.0


def test_flora_starts_from_an_empty_or_zero_b_stack() -> None:
    rng = np.random.default_rng(4)
    fresh = adapter(rng, rank=4)
    zero_b = {n: (np.zeros_like(v) if n.endswith(LORA_B_SUFFIX) else v) for n, v in fresh.items()}
    empty = {n: (v[:0] if n.endswith(LORA_A_SUFFIX) else v[:, :0]) for n, v in fresh.items()}
    clients = [adapter(rng, rank=3), adapter(rng, rank=3)]
    for start in (zero_b, empty):
        stack = flora_stack(start, clients, [1.0, 1.0], [1.0, 1.0])
        assert stack.ranks == {Q: 6, V: 6}
        assert rel_error(lora_delta(stack.arrays), weighted_delta(clients, [1, 1], [1, 1])) < 1e-5


def test_flora_cap_keeps_the_best_rank_cap_approximation_and_reports_the_loss() -> None:
    rng = np.random.default_rng(5)
    clients = [adapter(rng, rank=4) for _ in range(3)]  # rank 12 stacked
    full = weighted_delta(clients, [1, 1, 1], [1, 1, 1])
    stack = flora_stack({n: v[:0] if n.endswith(LORA_A_SUFFIX) else v[:, :0] for n, v in clients[0].items()},
                        clients, [1, 1, 1], [1, 1, 1], max_rank=5)  # fmt: skip
    assert stack.ranks == {Q: 5, V: 5}
    kept = lora_delta(stack.arrays)
    dropped_sq = total_sq = 0.0
    for module, delta in full.items():
        u, s, vt = np.linalg.svd(delta)
        best = (u[:, :5] * s[:5]) @ vt[:5]  # Eckart–Young: the best rank-5 approximation
        np.testing.assert_allclose(kept[module], best, atol=1e-9 * np.abs(delta).max())
        dropped_sq += float(np.sum(s[5:] ** 2))
        total_sq += float(np.sum(s**2))
    assert stack.truncation_error == pytest.approx(math.sqrt(dropped_sq / total_sq))
    assert 0 < stack.truncation_error < 1


def test_flora_refuses_adapters_that_do_not_stack() -> None:
    rng = np.random.default_rng(6)
    bad = adapter(rng)
    bad[Q + LORA_A_SUFFIX] = rng.normal(size=(4, 15))
    with pytest.raises(ValidationFailed):
        flora_stack(adapter(rng), [bad], [1.0], [1.0])


# -- soft prompts --------------------------------------------------------------------------


def test_prompt_average_is_data_weighted() -> None:
    p1, p2 = np.zeros((4, 8)), np.ones((4, 8))
    np.testing.assert_allclose(average_prompts([p1, p2], [1, 3]), np.full((4, 8), 0.75))


def test_prompt_clustering_recovers_two_separated_groups() -> None:
    rng = np.random.default_rng(7)
    centre_a, centre_b = rng.normal(size=(4, 8)), rng.normal(size=(4, 8)) + 6
    group = [0, 1, 0, 1, 1, 0, 0, 1]
    prompts = [(centre_a if g == 0 else centre_b) + 0.1 * rng.normal(size=(4, 8)) for g in group]
    clusters = cluster_prompts(prompts, 2, seed=11)
    labels = clusters.assignments
    assert len(set(labels)) == 2
    assert all((labels[i] == labels[j]) == (group[i] == group[j]) for i in range(8) for j in range(8))
    members_a = [p for p, g in zip(prompts, group, strict=True) if g == 0]
    np.testing.assert_allclose(clusters.centroids[labels[0]], np.mean(members_a, axis=0))
    assert sorted(clusters.sizes) == [4, 4]
    again = cluster_prompts(prompts, 2, seed=11)
    assert again.assignments == labels and np.array_equal(again.centroids, clusters.centroids)


def test_prompt_clustering_makes_at_most_one_cluster_per_client_and_keeps_init_order() -> None:
    rng = np.random.default_rng(8)
    prompts = [rng.normal(size=(2, 3)) for _ in range(3)]
    assert len(cluster_prompts(prompts, 5, seed=0).centroids) == 3
    far = [np.zeros((2, 3)), np.zeros((2, 3)) + 0.1, np.full((2, 3), 9.0)]
    init = np.stack([np.full((2, 3), 9.0), np.zeros((2, 3))])  # cluster 0 is the far one
    assert cluster_prompts(far, 2, seed=0, init=init).assignments == (1, 1, 0)


# -- validation ----------------------------------------------------------------------------


def prompt(value: float = 0.0) -> dict[str, np.ndarray]:
    return {"prompt_embeddings": np.full((4, 8), value, dtype=np.float32)}


LIMITS = UpdateLimits(max_norm=1.0, reject_factor=10.0)


def test_an_update_within_the_bound_is_accepted_as_sent() -> None:
    check = check_update(prompt(0.1), prompt(), LIMITS)
    assert check.verdict is Verdict.ACCEPTED and check.reason == "ok"
    np.testing.assert_allclose(check.arrays["prompt_embeddings"], 0.1, rtol=1e-6)


def test_an_update_over_the_bound_is_clipped_to_it() -> None:
    sent = prompt(1.0)
    check = check_update(prompt(1.5), sent, LIMITS)  # change norm 0.5 · √32 ≈ 2.83
    assert check.verdict is Verdict.CLIPPED and check.accepted
    assert check.norm == pytest.approx(0.5 * math.sqrt(32))
    change = check.arrays["prompt_embeddings"] - sent["prompt_embeddings"]
    assert np.linalg.norm(change) == pytest.approx(1.0)
    assert "clipped" in check.reason


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        (prompt(100.0), "norm"),
        ({"prompt_embeddings": np.zeros((4, 9), np.float32)}, "shape"),
        ({"prompt_embeddings": np.full((4, 8), np.nan, np.float32)}, "non-finite"),
        ({"prompt_embeddings": np.full((4, 8), np.inf, np.float32)}, "non-finite"),
        ({"other": np.zeros((4, 8), np.float32)}, "names"),
        ({"prompt_embeddings": np.zeros((4, 8), np.int64)}, "dtype"),
    ],
)
def test_bad_updates_are_rejected_with_a_reason(update: dict[str, np.ndarray], reason: str) -> None:
    check = check_update(update, prompt(), LIMITS)
    assert check.verdict is Verdict.REJECTED and not check.accepted
    assert reason in check.reason and check.arrays == {}


def test_without_a_bound_nothing_is_clipped() -> None:
    assert check_update(prompt(100.0), prompt(), UpdateLimits()).verdict is Verdict.ACCEPTED


@pytest.mark.parametrize("limits", [{"max_norm": 0.0}, {"max_norm": math.inf}, {"max_norm": 1.0, "reject_factor": 0.5}])
def test_invalid_limits_are_a_config_error(limits: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        UpdateLimits(**limits)


def test_fresh_lora_checks_shapes_rank_and_clips_the_weight_change() -> None:
    rng = np.random.default_rng(9)
    stack = {n: (v[:0] if n.endswith(LORA_A_SUFFIX) else v[:, :0]) for n, v in adapter(rng).items()}
    fresh = adapter(rng, rank=3)
    ok = check_fresh_lora(fresh, stack, 0.5, UpdateLimits(), max_rank=8)
    assert ok.verdict is Verdict.ACCEPTED
    norm = math.sqrt(sum(float(np.sum(d**2)) for d in lora_delta(fresh, 0.5).values()))
    assert ok.norm == pytest.approx(norm)
    clipped = check_fresh_lora(fresh, stack, 0.5, UpdateLimits(max_norm=norm / 4), max_rank=8)
    assert clipped.verdict is Verdict.CLIPPED
    kept = math.sqrt(sum(float(np.sum(d**2)) for d in lora_delta(clipped.arrays, 0.5).values()))
    assert kept == pytest.approx(norm / 4)
    assert "rank" in check_fresh_lora(adapter(rng, rank=9), stack, 0.5, UpdateLimits(), max_rank=8).reason
    wrong_in = dict(fresh)
    wrong_in[V + LORA_A_SUFFIX] = rng.normal(size=(3, 15))
    assert check_fresh_lora(wrong_in, stack, 0.5, UpdateLimits()).verdict is Verdict.REJECTED
    assert check_fresh_lora(fresh, stack, math.nan, UpdateLimits()).verdict is Verdict.REJECTED
