"""Flower strategies for federated LoRA adapters and soft prompts (Message API, flwr 1.42).

Each strategy is a :class:`flwr.serverapp.strategy.FedAvg` whose ``configure_train`` /
``aggregate_train`` are replaced by the algorithms of :mod:`aggregation.adapters`, and
which treats every reply as untrusted input: a reply with the wrong names or shapes,
non-finite values or a missing / non-positive weight is rejected (logged with the node id
and the reason, counted in the round's metrics) and the round goes on with the others; an
update whose norm is above :class:`~aggregation.adapters.UpdateLimits` is clipped; if no
valid reply is left, ``aggregate_train`` returns no arrays and Flower keeps the previous
ones. The outcome of every sampled node is kept in :attr:`AdapterStrategy.reports`.

The contract with the ClientApp
-------------------------------

Every train message holds ``"arrays"`` (an ArrayRecord) and ``"config"`` (a ConfigRecord)
with ``"server-round"`` and ``"adapter-method"`` (one of :data:`STRATEGIES`). Array names
are peft state-dict names without the adapter name (``<module>.lora_A.weight`` ``(r, in)``,
``<module>.lora_B.weight`` ``(out, r)``, or ``prompt_embeddings`` ``(n_virtual, hidden)``),
float32. Every reply holds ``"arrays"`` (the same names, **in the order received**:
Flower's DP wrappers pair the reply's arrays with the broadcast ones by position) and
``"metrics"`` (one MetricRecord) with ``"num-examples"`` (positive) and ``"train_loss"``,
all values finite.

``fedavg-lora`` (:class:`FedAvgLoRA`)
    Sends A and B of every module; the client loads both, trains both, replies with both.
``ffa-lora`` (:class:`FFALoRA`)
    Sends the B arrays only, and ``"ffa-seed"`` (int). The client sets every module's A to
    ``aggregation.ffa_lora_a(module, (r, in_features), seed)`` with ``r`` the B's second
    dimension, freezes it, loads B, trains B, and replies with the B arrays only. A never
    travels (so DP noise never touches it), and every client's scaling must be the same.
``flora`` (:class:`FLoRA`)
    Sends the global stack: A ``(R, in)`` and B ``(out, R)`` per module with the scaling
    folded into B (effective scale 1; ``R`` may differ per module, is at most
    ``"lora-max-rank"``, and is 0 before the first aggregation). The client adds
    ``B · A`` to the **original** base weights (the stack accumulates all rounds), then
    trains a fresh peft LoRA of its own rank ``r ≤ "lora-max-rank"`` and replies with its
    lora_A ``(r, in)`` and lora_B ``(out, r)`` under the same names, and the metric
    ``"lora-scaling"`` (its ``lora_alpha / r``). For evaluation it merges the stack only.
``prompt-avg`` (:class:`PromptAvg`)
    Sends ``prompt_embeddings``; the client trains it and replies with it.
``prompt-cluster`` (:class:`PromptCluster`)
    Sends each node one ``prompt_embeddings``: its cluster's centroid (``"prompt-cluster"``
    in the config is the cluster index, -1 for the global mean before a node has a
    cluster). The reply is as for ``prompt-avg``. The global arrays held between rounds
    are ``prompt_embeddings`` (the mean) and ``cluster.<j>.prompt_embeddings``.

Differential privacy: Flower's ``DifferentialPrivacyServerSideFixedClipping`` and
``DifferentialPrivacyClientSideFixedClipping`` (with ``flwr.clientapp.mod.fixedclipping_mod``)
wrap ``FedAvgLoRA``, ``FFALoRA`` and ``PromptAvg``: they clip ``reply − broadcast`` and noise
every array the strategy returns. They cannot wrap ``FLoRA`` (the reply's rank differs from
the stack's) nor, server-side, ``PromptCluster`` (the broadcast holds the centroids). Use
``uniform_weights=True`` under DP: the noise is calibrated to an unweighted mean.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict, Unpack, cast

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from aggregation.adapters import (
    DEFAULT_MAX_RANK,
    LORA_B_SUFFIX,
    PROMPT_KEY,
    UpdateCheck,
    UpdateLimits,
    Verdict,
    average_prompts,
    check_fresh_lora,
    check_update,
    cluster_prompts,
    fedavg_lora,
    fedavg_lora_error,
    ffa_lora_aggregate,
    flora_stack,
    pair_lora_names,
    weighted_mean,
)
from federation.errors import ConfigError, ValidationFailed

__all__ = [
    "CLUSTER_KEY",
    "FFA_SEED_KEY",
    "MAX_RANK_KEY",
    "METHOD_KEY",
    "SCALING_KEY",
    "STRATEGIES",
    "AdapterStrategy",
    "FFALoRA",
    "FLoRA",
    "FedAvgLoRA",
    "NodeOutcome",
    "PromptAvg",
    "PromptCluster",
    "RoundReport",
    "SamplingOptions",
    "StrategyOptions",
    "cluster_key",
    "make_strategy",
]

logger = logging.getLogger(__name__)

METHOD_KEY = "adapter-method"
FFA_SEED_KEY = "ffa-seed"
MAX_RANK_KEY = "lora-max-rank"
SCALING_KEY = "lora-scaling"
CLUSTER_KEY = "prompt-cluster"
DROPPED = "dropped"

NDArrays = dict[str, npt.NDArray[Any]]


class SamplingOptions(TypedDict, total=False):
    """Flower's node-sampling options, passed on to :class:`FedAvg`."""

    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int


class StrategyOptions(SamplingOptions, total=False):
    """The options every :class:`AdapterStrategy` takes."""

    limits: UpdateLimits | None
    uniform_weights: bool


@dataclass(frozen=True)
class NodeOutcome:
    """What became of one sampled node's reply in one round.

    Attributes:
        status: ``accepted``, ``clipped``, ``rejected`` or ``dropped`` (no reply, or an error reply).
        reason: Why, in words.
    """

    status: str
    reason: str


@dataclass
class RoundReport:
    """Per-node outcomes of one training round (node id → outcome)."""

    server_round: int
    outcomes: dict[int, NodeOutcome] = field(default_factory=dict)

    def count(self, status: str) -> int:
        """How many nodes ended with ``status``."""
        return sum(1 for o in self.outcomes.values() if o.status == status)


@dataclass(frozen=True)
class _Accepted:
    node_id: int
    arrays: dict[str, npt.NDArray[np.float64]]
    weight: float
    metrics: MetricRecord
    content: RecordDict


def _to_numpy(record: ArrayRecord) -> NDArrays:
    return {name: array.numpy() for name, array in record.items()}


def _to_record(arrays: Mapping[str, npt.NDArray[Any]]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(value, dtype=np.float32)) for name, value in arrays.items()})


def _number(value: object) -> float | None:
    """A finite int/float metric value, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class AdapterStrategy(FedAvg):
    """FedAvg's round skeleton with validated replies; subclasses supply the algorithm.

    Subclasses set :attr:`method` and override :meth:`_check_global` (what the broadcast
    must look like), :meth:`_aggregate` and, where needed, :meth:`_check_reply` and
    :meth:`_config`.

    Args:
        limits: Norm bound on each update (clip, or reject beyond the hard factor).
        uniform_weights: Weigh every accepted reply equally instead of by
            ``num-examples`` (what Flower's DP noise calibration assumes).
        **options: Flower's sampling options (:class:`SamplingOptions`).
    """

    method: ClassVar[str]

    def __init__(
        self, *, limits: UpdateLimits | None = None, uniform_weights: bool = False, **options: Unpack[SamplingOptions]
    ) -> None:
        super().__init__(**options)
        self.limits = limits or UpdateLimits()
        self.uniform_weights = uniform_weights
        self.reports: dict[int, RoundReport] = {}
        self._global: NDArrays = {}
        self._sent: dict[int, NDArrays] = {}

    # -- hooks -----------------------------------------------------------------------------

    def _check_global(self, arrays: NDArrays) -> None:
        """Raise :class:`ConfigError` when the global arrays do not fit this strategy."""

    def _config(self, config: ConfigRecord) -> None:
        """Add this strategy's keys to the train config."""

    def _check_reply(self, arrays: NDArrays, metrics: MetricRecord, sent: NDArrays) -> UpdateCheck:
        return check_update(arrays, sent, self.limits)

    def _aggregate(
        self, server_round: int, replies: list[_Accepted], weights: list[float]
    ) -> tuple[Mapping[str, npt.NDArray[Any]], dict[str, float | int | list[int]]]:
        raise NotImplementedError

    # -- Flower's Strategy -----------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """Check the global arrays, add the strategy's config keys and sample the nodes."""
        self._global = _to_numpy(arrays)
        self._check_global(self._global)
        config[METHOD_KEY] = self.method
        self._config(config)
        messages = list(self._train_messages(server_round, arrays, config, grid))
        decoded: dict[int, NDArrays] = {}
        self._sent = {}
        for message in messages:
            record = message.content.array_records[self.arrayrecord_key]
            if id(record) not in decoded:
                decoded[id(record)] = _to_numpy(record)
            self._sent[message.metadata.dst_node_id] = decoded[id(record)]
        return messages

    def _train_messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate every reply, aggregate the accepted ones and report what happened to each node."""
        report = RoundReport(server_round)
        self.reports[server_round] = report
        accepted = self._screen(list(replies), report)
        for node_id in self._sent.keys() - report.outcomes.keys():
            report.outcomes[node_id] = NodeOutcome(DROPPED, "no reply")
            logger.warning("round %d: node %d did not reply", server_round, node_id, extra={"node_id": node_id})
        metrics = MetricRecord(
            {
                "nodes-sampled": len(self._sent),
                "replies-accepted": report.count(Verdict.ACCEPTED) + report.count(Verdict.CLIPPED),
                "replies-clipped": report.count(Verdict.CLIPPED),
                "replies-rejected": report.count(Verdict.REJECTED),
                "nodes-dropped": report.count(DROPPED),
            }
        )
        if not accepted:
            logger.warning("round %d: no valid reply; the global arrays stay as they were", server_round)
            return None, metrics
        weights = [1.0 if self.uniform_weights else r.weight for r in accepted]
        arrays, extra = self._aggregate(server_round, accepted, weights)
        for key, value in self.train_metrics_aggr_fn([r.content for r in accepted], self.weighted_by_key).items():
            metrics[key] = value
        for key, value in extra.items():
            metrics[key] = value
        return _to_record(arrays), metrics

    def _screen(self, replies: list[Message], report: RoundReport) -> list[_Accepted]:
        accepted: list[_Accepted] = []
        for message in replies:
            node_id = message.metadata.src_node_id
            if node_id in report.outcomes or node_id not in self._sent:
                logger.warning(
                    "round %d: ignored a reply from node %d (duplicate or not sampled)", report.server_round, node_id
                )
                continue
            if message.has_error():
                reason = f"error reply: {message.error.reason}"
                report.outcomes[node_id] = NodeOutcome(DROPPED, reason)
                logger.warning(
                    "round %d: node %d failed: %s", report.server_round, node_id, reason, extra={"node_id": node_id}
                )
                continue
            check, weight, metrics = self._check_message(message, self._sent[node_id])
            report.outcomes[node_id] = NodeOutcome(check.verdict.value, check.reason)
            if check.accepted:
                accepted.append(_Accepted(node_id, check.arrays, weight, metrics, message.content))
            if check.verdict is not Verdict.ACCEPTED:
                logger.warning(
                    "round %d: reply of node %d %s: %s",
                    report.server_round,
                    node_id,
                    check.verdict.value,
                    check.reason,
                    extra={"node_id": node_id, "verdict": check.verdict.value, "reason": check.reason},
                )
        return accepted

    def _check_message(self, message: Message, sent: NDArrays) -> tuple[UpdateCheck, float, MetricRecord]:
        content = message.content
        empty = MetricRecord()
        if list(content.array_records) != [self.arrayrecord_key] or len(content.metric_records) != 1:
            reason = f"a reply holds one ArrayRecord '{self.arrayrecord_key}' and one MetricRecord"
            return UpdateCheck(Verdict.REJECTED, reason, {}), 0.0, empty
        metrics = next(iter(content.metric_records.values()))
        weight = _number(metrics.get(self.weighted_by_key))
        if weight is None or weight <= 0:
            return UpdateCheck(Verdict.REJECTED, f"'{self.weighted_by_key}' must be a positive number", {}), 0.0, empty
        for key, value in metrics.items():
            values = value if isinstance(value, list) else [value]
            if not all(_number(v) is not None for v in values):
                return UpdateCheck(Verdict.REJECTED, f"metric '{key}' is not finite", {}), 0.0, empty
        try:
            arrays = _to_numpy(content.array_records[self.arrayrecord_key])
        except (TypeError, ValueError, OSError) as exc:
            return UpdateCheck(Verdict.REJECTED, f"arrays cannot be decoded: {exc}", {}), 0.0, empty
        try:
            return self._check_reply(arrays, metrics, sent), weight, metrics
        except ValidationFailed as exc:
            return UpdateCheck(Verdict.REJECTED, exc.detail, {}), 0.0, empty


class FedAvgLoRA(AdapterStrategy):
    """FedAvg of LoRA (A and B averaged separately): the baseline.

    Its round metrics carry ``fedavg-lora-error``, the relative Frobenius error of
    ``mean(B)·mean(A)`` against the exact ``mean(B·A)`` of the round's replies.
    """

    method = "fedavg-lora"

    def _check_global(self, arrays: NDArrays) -> None:
        _lora_pairs_or_config_error(arrays)

    def _aggregate(
        self, server_round: int, replies: list[_Accepted], weights: list[float]
    ) -> tuple[Mapping[str, npt.NDArray[Any]], dict[str, float | int | list[int]]]:
        states = [r.arrays for r in replies]
        return fedavg_lora(states, weights), {"fedavg-lora-error": fedavg_lora_error(states, weights)}


class FFALoRA(AdapterStrategy):
    """FFA-LoRA: A frozen at a seeded initialisation every party derives, only B averaged (exact).

    Args:
        seed: The federation's FFA seed, sent as ``ffa-seed``.
        **kwargs: As for :class:`AdapterStrategy`.
    """

    method = "ffa-lora"

    def __init__(self, *, seed: int = 0, **kwargs: Unpack[StrategyOptions]) -> None:
        super().__init__(**kwargs)
        self.seed = seed

    @staticmethod
    def initial_arrays(adapter: Mapping[str, npt.NDArray[Any]]) -> ArrayRecord:
        """The B arrays of a (peft-initialised) adapter: what FFA-LoRA broadcasts first."""
        return _to_record({name: value for name, value in adapter.items() if name.endswith(LORA_B_SUFFIX)})

    def _check_global(self, arrays: NDArrays) -> None:
        others = [name for name in arrays if not name.endswith(LORA_B_SUFFIX)]
        if others or not arrays:
            raise ConfigError(f"FFA-LoRA broadcasts lora_B arrays only (A must never travel), got {others[:3]}")

    def _config(self, config: ConfigRecord) -> None:
        config[FFA_SEED_KEY] = self.seed

    def _aggregate(
        self, server_round: int, replies: list[_Accepted], weights: list[float]
    ) -> tuple[Mapping[str, npt.NDArray[Any]], dict[str, float | int | list[int]]]:
        return ffa_lora_aggregate([r.arrays for r in replies], weights), {}


class FLoRA(AdapterStrategy):
    """FLoRA: exact aggregation by stacking fresh client adapters onto the global stack.

    Args:
        max_rank: Rank cap of the stack (vLLM's ``--max-lora-rank``); past it the stack is
            SVD-truncated and ``flora-truncation-error`` reports the relative loss.
        **kwargs: As for :class:`AdapterStrategy`.
    """

    method = "flora"

    def __init__(self, *, max_rank: int = DEFAULT_MAX_RANK, **kwargs: Unpack[StrategyOptions]) -> None:
        super().__init__(**kwargs)
        if max_rank < 1:
            raise ConfigError(f"max_rank must be at least 1, got {max_rank}")
        self.max_rank = max_rank

    @staticmethod
    def initial_arrays(adapter: Mapping[str, npt.NDArray[Any]]) -> ArrayRecord:
        """An empty (rank-0) stack with the modules and shapes of ``adapter``."""
        out: dict[str, npt.NDArray[Any]] = {}
        for pair in pair_lora_names(adapter).values():
            out[pair.a] = np.zeros((0, np.shape(adapter[pair.a])[1]), np.float32)
            out[pair.b] = np.zeros((np.shape(adapter[pair.b])[0], 0), np.float32)
        return _to_record(out)

    def _check_global(self, arrays: NDArrays) -> None:
        _lora_pairs_or_config_error(arrays)

    def _config(self, config: ConfigRecord) -> None:
        config[MAX_RANK_KEY] = self.max_rank

    def _check_reply(self, arrays: NDArrays, metrics: MetricRecord, sent: NDArrays) -> UpdateCheck:
        scaling = _number(metrics.get(SCALING_KEY))
        if scaling is None:
            return UpdateCheck(Verdict.REJECTED, f"a FLoRA reply reports its '{SCALING_KEY}'", {})
        return check_fresh_lora(arrays, sent, scaling, self.limits, max_rank=self.max_rank)

    def _aggregate(
        self, server_round: int, replies: list[_Accepted], weights: list[float]
    ) -> tuple[Mapping[str, npt.NDArray[Any]], dict[str, float | int | list[int]]]:
        previous = self._global
        scalings = [float(cast(float, r.metrics[SCALING_KEY])) for r in replies]
        stack = flora_stack(previous, [r.arrays for r in replies], weights, scalings, max_rank=self.max_rank)
        return stack.arrays, {
            "flora-rank": max(stack.ranks.values(), default=0),
            "flora-truncation-error": stack.truncation_error,
        }


class PromptAvg(AdapterStrategy):
    """Soft-prompt averaging: the data-weighted mean of the clients' ``prompt_embeddings``."""

    method = "prompt-avg"

    def _check_global(self, arrays: NDArrays) -> None:
        if list(arrays) != [PROMPT_KEY] or np.ndim(arrays[PROMPT_KEY]) != 2:
            raise ConfigError(f"prompt averaging broadcasts one 2-D '{PROMPT_KEY}' array")

    def _aggregate(
        self, server_round: int, replies: list[_Accepted], weights: list[float]
    ) -> tuple[Mapping[str, npt.NDArray[Any]], dict[str, float | int | list[int]]]:
        return {PROMPT_KEY: average_prompts([r.arrays[PROMPT_KEY] for r in replies], weights)}, {}


def cluster_key(index: int) -> str:
    """The global array name of centroid ``index``."""
    return f"cluster.{index}.{PROMPT_KEY}"


class PromptCluster(AdapterStrategy):
    """Soft-prompt clustering: k-means over the clients' prompts, each node trains its centroid.

    Centroids travel between rounds in the global arrays (so a DP wrapper noises them) and
    seed the next round's k-means (so cluster indices stay put); the node → cluster map
    is :attr:`assignments`.

    Args:
        k: Clusters wanted (at most the replies of a round).
        seed: Seed of the k-means starts.
        **kwargs: As for :class:`AdapterStrategy`.
    """

    method = "prompt-cluster"

    def __init__(self, *, k: int = 2, seed: int = 0, **kwargs: Unpack[StrategyOptions]) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        self.k, self.seed = k, seed
        self.assignments: dict[int, int] = {}

    def _check_global(self, arrays: NDArrays) -> None:
        if PROMPT_KEY not in arrays or np.ndim(arrays[PROMPT_KEY]) != 2:
            raise ConfigError(f"prompt clustering needs a 2-D '{PROMPT_KEY}' array")

    def _per_node(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid, message_type: str
    ) -> list[Message]:
        fraction = self.fraction_train if message_type == MessageType.TRAIN else self.fraction_evaluate
        minimum = self.min_train_nodes if message_type == MessageType.TRAIN else self.min_evaluate_nodes
        if fraction == 0.0:
            return []
        sample_size = max(int(len(list(grid.get_node_ids())) * fraction), minimum)
        node_ids, _ = sample_nodes(grid, self.min_available_nodes, sample_size)
        config["server-round"] = server_round
        messages = []
        for node_id in node_ids:
            cluster = self.assignments.get(node_id, -1)
            key = cluster_key(cluster) if cluster >= 0 and cluster_key(cluster) in arrays else PROMPT_KEY
            node_config = ConfigRecord(dict(config))
            node_config[CLUSTER_KEY] = cluster if key != PROMPT_KEY else -1
            record = RecordDict(
                {self.arrayrecord_key: ArrayRecord({PROMPT_KEY: arrays[key]}), self.configrecord_key: node_config}
            )
            messages.append(Message(content=record, message_type=message_type, dst_node_id=node_id))
        return messages

    def _train_messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._per_node(server_round, arrays, config, grid, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """Send each evaluating node its cluster's centroid (the global mean if it has none)."""
        return self._per_node(server_round, arrays, config, grid, MessageType.EVALUATE)

    def _aggregate(
        self, server_round: int, replies: list[_Accepted], weights: list[float]
    ) -> tuple[Mapping[str, npt.NDArray[Any]], dict[str, float | int | list[int]]]:
        prompts = [r.arrays[PROMPT_KEY] for r in replies]
        previous = self._previous_centroids()
        seed = int(np.random.SeedSequence([self.seed, server_round]).generate_state(1)[0])
        clusters = cluster_prompts(prompts, self.k, seed=seed, weights=weights, init=previous)
        for reply, cluster in zip(replies, clusters.assignments, strict=True):
            self.assignments[reply.node_id] = cluster
        arrays: dict[str, npt.NDArray[Any]] = {PROMPT_KEY: weighted_mean(prompts, weights)}
        for index, centroid in enumerate(clusters.centroids):
            arrays[cluster_key(index)] = centroid
        return arrays, {"cluster-sizes": clusters.sizes, "cluster-inertia": clusters.inertia}

    def _previous_centroids(self) -> npt.NDArray[Any] | None:
        keys = [cluster_key(j) for j in range(self.k)]
        if not all(key in self._global for key in keys):
            return None
        return np.stack([self._global[key] for key in keys])


def _lora_pairs_or_config_error(arrays: NDArrays) -> None:
    try:
        pair_lora_names(arrays)
    except ValidationFailed as exc:
        raise ConfigError(f"the global arrays are not a LoRA adapter: {exc.detail}") from exc
    if not arrays:
        raise ConfigError("the global arrays are empty")


STRATEGIES: dict[str, type[AdapterStrategy]] = {
    FedAvgLoRA.method: FedAvgLoRA,
    FFALoRA.method: FFALoRA,
    FLoRA.method: FLoRA,
    PromptAvg.method: PromptAvg,
    PromptCluster.method: PromptCluster,
}
"""Strategy name (the ``adapter-method`` config value) → class."""


def make_strategy(name: str, **options: Any) -> AdapterStrategy:
    """Build a strategy by name.

    Args:
        name: One of :data:`STRATEGIES`.
        **options: The class's keyword arguments; ``max_norm`` and ``reject_factor`` are
            accepted in place of ``limits``.

    Raises:
        ConfigError: Unknown name or option, or an invalid value.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown adapter strategy '{name}'; choose one of {sorted(STRATEGIES)}")
    bound = {key: options.pop(key) for key in ("max_norm", "reject_factor") if key in options}
    if bound:
        if "limits" in options:
            raise ConfigError("give either limits or max_norm / reject_factor, not both")
        options["limits"] = UpdateLimits(**bound)
    try:
        return STRATEGIES[name](**options)
    except TypeError as exc:
        raise ConfigError(f"invalid options for '{name}': {exc}") from exc
