from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Result,
    Strategy,
)
from flwr.supercore.task_identity import TaskIdentity

from aggregation import LORA_A_SUFFIX, LORA_B_SUFFIX, PROMPT_KEY, UpdateLimits, ffa_lora_a, lora_delta
from federation.errors import ConfigError
from training.privacy import client_level_epsilon
from training.strategies import (
    CLUSTER_KEY,
    FFA_SEED_KEY,
    METHOD_KEY,
    SCALING_KEY,
    FedAvgLoRA,
    FFALoRA,
    FLoRA,
    PromptAvg,
    PromptCluster,
    SamplingOptions,
    cluster_key,
    make_strategy,
)

pytestmark = pytest.mark.unit

Q = "base_model.model.model.layers.0.self_attn.q_proj"
V = "base_model.model.model.layers.0.self_attn.v_proj"
SHAPES = {Q: (24, 16), V: (8, 16)}  # module → (out, in)
RANK = 4

Node = Callable[[Message], Message | None]


@pytest.fixture(autouse=True)
def server_app_identity() -> Iterator[None]:
    """Flower 1.42 stamps every instruction with the running task's identity, set by its runtime."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


class LoopbackGrid(Grid):
    """Flower's transport, in process: each node is a function from instruction to reply (or None)."""

    def __init__(self, nodes: dict[int, Node]) -> None:
        self.nodes = nodes
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self.snapshots: dict[tuple[int, int], tuple[dict[str, np.ndarray], dict[str, object]]] = {}

    def set_run(self, run: object) -> None:  # type: ignore[override]
        pass

    @property
    def run(self) -> object:  # type: ignore[override]
        raise NotImplementedError

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        out = []
        for message in messages:
            self.sent.append(message)
            config = dict(message.content["config"])  # Flower reuses one ConfigRecord across rounds
            self.snapshots[(message.metadata.dst_node_id, int(config["server-round"]))] = (received(message), config)
            reply = self.nodes[message.metadata.dst_node_id](message)
            if reply is not None:
                out.append(reply)
        self.replies.extend(out)
        return out

    def sent_to(self, node_id: int, server_round: int) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """The arrays and config that ``node_id`` received in ``server_round``."""
        return self.snapshots[(node_id, server_round)]


def received(message: Message) -> dict[str, np.ndarray]:
    return numpy(message.content.array_records["arrays"])


def reply(message: Message, arrays: dict[str, np.ndarray], num_examples: float, **metrics: float) -> Message:
    """What a ClientApp's @app.train() handler returns."""
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": num_examples, "train_loss": 0.5, **metrics}),
        }
    )
    return Message(content, reply_to=message)


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()})


def numpy(rec: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy().astype(np.float64) for k, v in rec.items()}


def lora(rng: np.random.Generator, rank: int = RANK) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for module, (rows, cols) in SHAPES.items():
        out[module + LORA_A_SUFFIX] = rng.normal(size=(rank, cols))
        out[module + LORA_B_SUFFIX] = rng.normal(size=(rows, rank))
    return out


def rel_error(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    num = sum(float(np.sum((actual[m] - expected[m]) ** 2)) for m in expected)
    return math.sqrt(num / sum(float(np.sum(expected[m] ** 2)) for m in expected))


def start(strategy: Strategy, grid: LoopbackGrid, arrays: ArrayRecord, rounds: int) -> Result:
    return strategy.start(grid, arrays, num_rounds=rounds, train_config=ConfigRecord())


SAMPLING: SamplingOptions = {"fraction_evaluate": 0.0, "min_available_nodes": 1, "min_train_nodes": 1}


# -- exactness -----------------------------------------------------------------------------


def test_ffa_lora_round_is_exact_and_a_never_travels() -> None:
    seed, scaling = 42, 2.0
    a = {m: ffa_lora_a(m, (RANK, cols), seed).astype(np.float64) for m, (_, cols) in SHAPES.items()}
    trained: dict[int, list[dict[str, np.ndarray]]] = {}
    weights = {1: 10.0, 2: 30.0, 3: 60.0}

    def node(node_id: int) -> Node:
        rng = np.random.default_rng(node_id)

        def train(message: Message) -> Message:
            assert message.content["config"][FFA_SEED_KEY] == seed
            b = {n: v + rng.normal(size=v.shape) for n, v in received(message).items()}
            trained.setdefault(message.content["config"]["server-round"], []).append(b)
            return reply(message, b, weights[node_id])

        return train

    grid = LoopbackGrid({i: node(i) for i in weights})
    initial = FFALoRA.initial_arrays({m + LORA_B_SUFFIX: np.zeros((rows, RANK)) for m, (rows, _) in SHAPES.items()})
    result = start(FFALoRA(seed=seed, **SAMPLING), grid, initial, rounds=2)

    assert all(name.endswith(LORA_B_SUFFIX) for m in grid.sent + grid.replies for name in m.content["arrays"])
    assert all(m.content["config"][METHOD_KEY] == "ffa-lora" for m in grid.sent)
    # exact: the global ΔW is the data-weighted mean of the clients' ΔW (last round)
    clients = [b | {m + LORA_A_SUFFIX: a[m] for m in SHAPES} for b in trained[2]]
    w = [weights[m.metadata.src_node_id] for m in grid.replies[3:]]
    expected = {
        m: sum(wi * d[m] for wi, d in zip(w, [lora_delta(c, scaling) for c in clients], strict=True)) / sum(w)
        for m in SHAPES
    }
    merged = numpy(result.arrays) | {m + LORA_A_SUFFIX: a[m] for m in SHAPES}
    assert rel_error(lora_delta(merged, scaling), expected) < 1e-5


def test_flora_rounds_accumulate_the_exact_weighted_sum_of_client_updates() -> None:
    ranks, alpha = {1: 2, 2: 4, 3: 8}, 16.0
    weights = {1: 1.0, 2: 2.0, 3: 5.0}
    expected = {m: np.zeros(shape) for m, shape in SHAPES.items()}

    def node(node_id: int) -> Node:
        rng = np.random.default_rng(node_id)

        def train(message: Message) -> Message:
            stack = received(message)
            assert all(stack[m + LORA_A_SUFFIX].shape[1] == cols for m, (_, cols) in SHAPES.items())
            fresh, scaling = lora(rng, ranks[node_id]), alpha / ranks[node_id]
            share = weights[node_id] / sum(weights.values())
            for m, d in lora_delta(fresh, scaling).items():
                expected[m] += share * d
            return reply(message, fresh, weights[node_id], **{SCALING_KEY: scaling})

        return train

    grid = LoopbackGrid({i: node(i) for i in ranks})
    strategy = FLoRA(max_rank=64, **SAMPLING)
    result = start(strategy, grid, FLoRA.initial_arrays(lora(np.random.default_rng(0))), rounds=3)

    assert rel_error(lora_delta(numpy(result.arrays)), expected) < 1e-5
    assert result.train_metrics_clientapp[3]["flora-rank"] == 3 * 14
    assert result.train_metrics_clientapp[3]["flora-truncation-error"] == 0.0
    # round 2's clients received round 1's stack: 14 components per module
    assert grid.sent_to(1, 2)[0][Q + LORA_A_SUFFIX].shape == (14, 16)


def test_flora_caps_the_stack_rank_and_reports_the_truncation() -> None:
    def train(message: Message) -> Message:
        rng = np.random.default_rng(message.metadata.dst_node_id)
        return reply(message, lora(rng, 4), 1.0, **{SCALING_KEY: 1.0})

    grid = LoopbackGrid({i: train for i in (1, 2, 3)})
    result = start(FLoRA(max_rank=6, **SAMPLING), grid, FLoRA.initial_arrays(lora(np.random.default_rng(0))), 1)
    assert result.arrays[Q + LORA_A_SUFFIX].shape == (6, 16)
    assert 0 < result.train_metrics_clientapp[1]["flora-truncation-error"] < 1


def test_fedavg_lora_reports_its_inexactness() -> None:
    def train(message: Message) -> Message:
        rng = np.random.default_rng(message.metadata.dst_node_id)
        return reply(message, {n: v + rng.normal(size=v.shape) for n, v in received(message).items()}, 1.0)

    grid = LoopbackGrid({i: train for i in (1, 2, 3)})
    result = start(FedAvgLoRA(**SAMPLING), grid, record(lora(np.random.default_rng(0))), 1)
    assert result.train_metrics_clientapp[1]["fedavg-lora-error"] > 0.01
    assert result.train_metrics_clientapp[1]["replies-accepted"] == 3


# -- untrusted replies ---------------------------------------------------------------------


def test_bad_replies_are_rejected_or_clipped_and_the_round_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    sent = np.zeros((4, 8))

    def answer(kind: str) -> Node:
        def train(message: Message) -> Message | None:
            p = received(message)[PROMPT_KEY]
            if kind == "good-10":
                return reply(message, {PROMPT_KEY: p + 0.1}, 10)
            if kind == "good-30":
                return reply(message, {PROMPT_KEY: p - 0.1}, 30)
            if kind == "nan":
                return reply(message, {PROMPT_KEY: np.full_like(p, np.nan)}, 10)
            if kind == "shape":
                return reply(message, {PROMPT_KEY: np.zeros((4, 9))}, 10)
            if kind == "huge":
                return reply(message, {PROMPT_KEY: p + 1e3}, 10)
            if kind == "clip":
                return reply(message, {PROMPT_KEY: p + 1.0}, 20)  # norm √32, bound 2: clipped
            if kind == "no-weight":
                return reply(message, {PROMPT_KEY: p}, 0)
            if kind == "error":
                return Message(Error(code=0, reason="out of memory"), reply_to=message)
            return None  # dropout

        return train

    kinds = ["good-10", "good-30", "nan", "shape", "huge", "clip", "no-weight", "error", "silent"]
    grid = LoopbackGrid({i: answer(k) for i, k in enumerate(kinds, start=1)})
    strategy = PromptAvg(limits=UpdateLimits(max_norm=2.0, reject_factor=10.0), **SAMPLING)
    with caplog.at_level(logging.WARNING, logger="training.strategies"):
        result = start(strategy, grid, record({PROMPT_KEY: sent}), 1)

    clipped = sent + 1.0 * (2.0 / math.sqrt(32))
    expected = (10 * (sent + 0.1) + 30 * (sent - 0.1) + 20 * clipped) / 60
    np.testing.assert_allclose(result.arrays[PROMPT_KEY].numpy(), expected, atol=1e-6)
    metrics = result.train_metrics_clientapp[1]
    assert (metrics["nodes-sampled"], metrics["replies-accepted"], metrics["replies-clipped"]) == (9, 3, 1)
    assert (metrics["replies-rejected"], metrics["nodes-dropped"]) == (4, 2)
    outcomes = strategy.reports[1].outcomes
    assert "non-finite" in outcomes[3].reason and "shape" in outcomes[4].reason
    assert "norm" in outcomes[5].reason and outcomes[6].status == "clipped"
    assert "num-examples" in outcomes[7].reason
    assert "out of memory" in outcomes[8].reason and outcomes[9].status == "dropped"
    assert "node 3" in caplog.text and "non-finite" in caplog.text
    assert "node 9 did not reply" in caplog.text


def test_a_round_without_a_valid_reply_keeps_the_previous_arrays() -> None:
    def train(message: Message) -> Message:
        p = received(message)[PROMPT_KEY]
        if message.content["config"]["server-round"] == 1:
            return reply(message, {PROMPT_KEY: np.full_like(p, np.nan)}, 1)
        return reply(message, {PROMPT_KEY: p + 1}, 1)

    grid = LoopbackGrid({1: train, 2: train})
    initial = np.arange(32.0).reshape(4, 8)
    result = start(PromptAvg(**SAMPLING), grid, record({PROMPT_KEY: initial}), 2)
    np.testing.assert_allclose(grid.sent_to(1, 2)[0][PROMPT_KEY], initial)
    np.testing.assert_allclose(result.arrays[PROMPT_KEY].numpy(), initial + 1)
    assert result.train_metrics_clientapp[1]["replies-rejected"] == 2


def test_ffa_lora_refuses_to_broadcast_a() -> None:
    grid = LoopbackGrid({1: lambda m: None})
    with pytest.raises(ConfigError, match="A must never travel"):
        start(FFALoRA(**SAMPLING), grid, record(lora(np.random.default_rng(0))), 1)


# -- soft prompts --------------------------------------------------------------------------


def test_prompt_clustering_sends_each_node_its_groups_centroid() -> None:
    rng = np.random.default_rng(3)
    targets = {0: rng.normal(size=(4, 8)), 1: rng.normal(size=(4, 8)) + 5}
    group = {1: 0, 2: 1, 3: 0, 4: 1, 5: 0, 6: 1}

    def train(message: Message) -> Message:
        node_id = message.metadata.dst_node_id
        noise = np.random.default_rng(node_id).normal(scale=0.05, size=(4, 8))
        return reply(message, {PROMPT_KEY: targets[group[node_id]] + noise}, 10)

    grid = LoopbackGrid({i: train for i in group})
    strategy = PromptCluster(k=2, seed=0, **SAMPLING)
    result = start(strategy, grid, record({PROMPT_KEY: np.zeros((4, 8))}), 2)

    labels = strategy.assignments
    assert all((labels[i] == labels[j]) == (group[i] == group[j]) for i in group for j in group)
    assert all(grid.sent_to(i, 1)[1][CLUSTER_KEY] == -1 for i in group)
    for node_id in group:  # round 2: each node trains from its own cluster's centroid
        arrays, config = grid.sent_to(node_id, 2)
        assert config[CLUSTER_KEY] == labels[node_id]
        np.testing.assert_allclose(arrays[PROMPT_KEY], targets[group[node_id]], atol=0.1)
    assert sorted(result.train_metrics_clientapp[2]["cluster-sizes"]) == [3, 3]
    assert set(result.arrays) == {PROMPT_KEY, cluster_key(0), cluster_key(1)}


# -- differential privacy ------------------------------------------------------------------


def b_arrays(value: float = 0.0) -> dict[str, np.ndarray]:
    return {m + LORA_B_SUFFIX: np.full((64, 8), value) for m in SHAPES}


def test_server_side_dp_wrapper_clips_ffa_updates_and_noises_only_b() -> None:
    clip, nodes = 0.5, [1, 2, 3, 4]

    def big_step(message: Message) -> Message:
        rng = np.random.default_rng(message.metadata.dst_node_id)
        return reply(message, {n: v + rng.normal(size=v.shape) for n, v in received(message).items()}, 1)

    grid = LoopbackGrid({i: big_step for i in nodes})
    inner = FFALoRA(seed=1, uniform_weights=True, **SAMPLING)
    dp = DifferentialPrivacyServerSideFixedClipping(
        inner, noise_multiplier=0.0, clipping_norm=clip, num_sampled_clients=4
    )
    result = start(dp, grid, record(b_arrays()), 1)
    for r in grid.replies:  # what reached our aggregate: each update clipped to the norm
        change = np.sqrt(
            sum(float(np.sum(v.numpy().astype(np.float64) ** 2)) for v in r.content.array_records["arrays"].values())
        )
        assert change <= clip * (1 + 1e-5)
    mean_change = math.sqrt(sum(float(np.sum(v**2)) for v in numpy(result.arrays).values()))
    assert mean_change <= clip * (1 + 1e-5)
    assert inner.reports[1].count("accepted") == 4


def test_server_side_dp_noise_has_the_calibrated_std_and_never_touches_a() -> None:
    noise_multiplier, clip, nodes = 1.0, 0.5, [1, 2, 3, 4]
    np.random.seed(1234)  # Flower draws its DP noise from numpy's global generator

    def almost_unchanged(message: Message) -> Message:
        # (an update of exactly zero norm makes Flower's clipping divide by zero)
        tiny = np.random.default_rng(message.metadata.dst_node_id).normal(scale=1e-6, size=(64, 8))
        return reply(message, {n: v + tiny for n, v in received(message).items()}, 1)

    grid = LoopbackGrid({i: almost_unchanged for i in nodes})
    inner = FFALoRA(seed=1, uniform_weights=True, **SAMPLING)
    dp = DifferentialPrivacyServerSideFixedClipping(inner, noise_multiplier, clip, num_sampled_clients=len(nodes))
    rounds = 10
    start(dp, grid, record(b_arrays()), rounds)
    broadcasts = [grid.sent_to(1, r)[0] for r in range(1, rounds + 1)]
    noise = np.concatenate(
        [(after[n] - before[n]).ravel() for before, after in itertools.pairwise(broadcasts) for n in after]
    )
    assert noise.size == (rounds - 1) * 2 * 64 * 8
    assert np.std(noise) == pytest.approx(noise_multiplier * clip / len(nodes), rel=0.03)
    assert abs(np.mean(noise)) < 0.01
    assert all(name.endswith(LORA_B_SUFFIX) for b in broadcasts for name in b)


def test_client_side_dp_wrapper_sends_the_clipping_norm_and_noises_only_b() -> None:
    def unchanged(message: Message) -> Message:
        assert message.content["config"]["clipping_norm"] == 0.5
        return reply(message, received(message), 1)

    grid = LoopbackGrid({1: unchanged, 2: unchanged})
    dp = DifferentialPrivacyClientSideFixedClipping(FFALoRA(**SAMPLING), 1.0, 0.5, num_sampled_clients=2)
    result = start(dp, grid, record(b_arrays()), 1)
    assert set(result.arrays) == set(b_arrays())
    assert np.std(result.arrays[Q + LORA_B_SUFFIX].numpy()) > 0.1


# -- factory and accounting ----------------------------------------------------------------


def test_make_strategy_builds_every_strategy_by_name() -> None:
    for name, cls in [
        ("fedavg-lora", FedAvgLoRA),
        ("ffa-lora", FFALoRA),
        ("flora", FLoRA),
        ("prompt-avg", PromptAvg),
        ("prompt-cluster", PromptCluster),
    ]:
        assert type(make_strategy(name)) is cls
    strategy = make_strategy("flora", max_rank=16, max_norm=3.0, min_train_nodes=3)
    assert isinstance(strategy, FLoRA) and strategy.max_rank == 16
    assert strategy.limits.max_norm == 3.0 and strategy.min_train_nodes == 3


@pytest.mark.parametrize(
    ("name", "options"),
    [("fedprox", {}), ("flora", {"rank_cap": 8}), ("flora", {"max_rank": 0}), ("ffa-lora", {"max_norm": -1})],
)
def test_make_strategy_refuses_unknown_names_and_bad_options(name: str, options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_strategy(name, **options)


def _exact_gaussian_epsilon(sigma: float, rounds: int, delta: float) -> float:
    """The tight epsilon of `rounds` Gaussian releases (analytic Gaussian mechanism, Balle & Wang 2018)."""
    s = sigma / math.sqrt(rounds)

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if phi(-mid * s + 1 / (2 * s)) - math.exp(mid) * phi(-mid * s - 1 / (2 * s)) > delta:
            lo = mid
        else:
            hi = mid
    return hi


@pytest.mark.parametrize(("sigma", "rounds"), [(5.0, 10), (10.0, 100)])
def test_client_level_epsilon_without_sampling_is_close_above_the_tight_value(sigma: float, rounds: int) -> None:
    exact = _exact_gaussian_epsilon(sigma, rounds, 1e-5)
    assert exact <= client_level_epsilon(sigma, 1.0, rounds, 1e-5) <= 1.2 * exact


def test_client_level_epsilon_gains_from_sampling_and_grows_with_rounds() -> None:
    # DP-SGD's classic MNIST setting (q = 256/60000, σ = 1.1, 60 epochs, δ = 1e-5): ε ≈ 3 with RDP
    assert 2.0 < client_level_epsilon(1.1, 256 / 60000, 14062, 1e-5) < 3.1
    assert client_level_epsilon(1.0, 0.1, 100, 1e-5) < client_level_epsilon(1.0, 0.1, 400, 1e-5)
    assert client_level_epsilon(1.0, 0.1, 100, 1e-5) < client_level_epsilon(1.0, 1.0, 100, 1e-5)
    assert client_level_epsilon(1.0, 0.1, 0, 1e-5) == 0.0
    with pytest.raises(ConfigError):
        client_level_epsilon(0.0, 0.1, 10, 1e-5)
