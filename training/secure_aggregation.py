"""Secure aggregation with Flower's SecAgg+: the ServerApp of ``training/secagg_app``.

``fedrag train run`` submits this app instead of ``training/flower_app`` when the run's
``secure_aggregation.enabled`` is true (:func:`training.deployment.app_dir_for`). In flwr
1.42 SecAgg+ exists only on the legacy API, so the server runs Flower's
``DefaultWorkflow`` with a :class:`SecAggPlusWorkflow` as its fit workflow and a legacy
strategy, :class:`SecureMeanStrategy`. Each round has four exchanges with every silo
(public keys, encrypted key shares, masked vectors, shares to unmask) instead of one.

What the server sees: SecAgg+ unmasks only the sum of the silos' quantised,
``num-examples``-weighted arrays (and the sum of the weights), and hands
``aggregate_fit`` the resulting **weighted mean** (the same Parameters in every FitRes;
each FitRes keeps its silo's ``num_examples`` and metrics). For ``fedavg-lora`` (A and B
averaged separately), ``ffa-lora`` (B averaged) and ``prompt-avg`` that mean *is* the
aggregate, so the strategy takes it as the new global arrays. FLoRA and prompt clustering
need each update and are refused by the settings. What is lost with the individual
updates: the per-reply checks of the plain path (norm bound, finiteness, names) cannot
run on the server; each silo checks its own reply, and every value is clipped to
``± clipping_range`` (times ``max_examples / num-examples``) before quantisation.

A round where too many silos drop out (fewer live neighbours than
``reconstruction_threshold`` for some silo) fails closed: the run stops with
:class:`~federation.errors.Unavailable` (``secure_aggregation_failed``), ``report.json``
says why under ``error``, and the global arrays stay those of the last finished round.
Every wait is bounded (``deployment.round_timeout_s`` per exchange,
``deployment.start_timeout_s`` for the silos to connect).

The output directory is written as by the plain app (``progress.jsonl``,
``checkpoint.npz``, ``adapter/``, ``report.json``); bytes per silo count every exchange
of the fit phase (masked vectors, keys, shares), and each round's line has a
``secure_aggregation`` entry (exchanges, bytes, what SecAgg+ reported).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.common import EvaluateRes, FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run

from federation.config import TrainRunSettings
from federation.errors import ConfigError, FedragError, Unavailable
from training.adapter_files import REPORT_FILE, save_adapter
from training.base_model import hf_model_dir
from training.local import AdapterModel
from training.recorder import RoundLog
from training.run_config import RUN_SETTINGS_KEY, settings_from_config, settings_to_config
from training.secagg_client import ARRAY_NAMES_KEY, ROUND_KEY
from training.server_app import build_report, initial_arrays
from training.silo_trainer import adapter_spec
from training.strategies import METHOD_KEY

logger = logging.getLogger(__name__)

FAILED_CODE = "secure_aggregation_failed"
SECURE_STRATEGIES = ("fedavg-lora", "ffa-lora", "prompt-avg")
"""Strategies whose aggregate is the weighted mean SecAgg+ computes."""


def payload_bytes(content: RecordDict) -> int:
    """Bytes a message carries: array data, and config / metric values (bytes, text, 8 per number)."""

    def size(value: object) -> int:
        if isinstance(value, bytes):
            return len(value)
        if isinstance(value, str):
            return len(value.encode())
        if isinstance(value, list):
            return sum(size(v) for v in value)
        return 8

    total = sum(len(array.data) for record in content.array_records.values() for array in record.values())
    for config in content.config_records.values():
        total += sum(size(v) for v in config.values())
    for metrics in content.metric_records.values():
        total += sum(size(v) for v in metrics.values())
    return total


@dataclass
class Exchanges:
    """What went to and came from each node in one phase of a round."""

    calls: int = 0
    sent: dict[int, int] = field(default_factory=dict)
    received: dict[int, int] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    unattributed_errors: list[str] = field(default_factory=list)


class MeteredGrid(Grid):
    """A Grid that bounds every wait and counts the bytes of each exchange per node, and the error replies.

    Args:
        inner: the grid Flower gave the ServerApp.
        timeout: seconds any ``send_and_receive`` waits at most when its caller gives no
            timeout (Flower's default evaluate workflow gives none).
    """

    def __init__(self, inner: Grid, *, timeout: float) -> None:
        self.inner = inner
        self.timeout = timeout
        self.phase = Exchanges()

    def begin(self) -> Exchanges:
        """Start counting a new phase; returns its counters."""
        self.phase = Exchanges()
        return self.phase

    def set_run(self, run: Run) -> None:  # noqa: D102 - delegates
        self.inner.set_run(run)

    @property
    def run(self) -> Run:  # noqa: D102 - delegates
        return self.inner.run

    def create_message(  # noqa: D102 - delegates
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102 - delegates
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102 - delegates
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102 - delegates
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Delegate, counting payload bytes per destination and per source node."""
        out = list(messages)
        phase = self.phase
        phase.calls += 1
        destinations = {m.metadata.dst_node_id for m in out}
        for message in out:
            node = message.metadata.dst_node_id
            phase.sent[node] = phase.sent.get(node, 0) + payload_bytes(message.content)
        replies = list(self.inner.send_and_receive(out, timeout=self.timeout if timeout is None else timeout))
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                reason = f"{reply.error.reason or 'error'} (code {reply.error.code})"
                if node in destinations:
                    phase.errors[node] = reason
                else:
                    phase.unattributed_errors.append(reason)
                continue
            phase.received[node] = phase.received.get(node, 0) + payload_bytes(reply.content)
        return replies


def _weighted_metrics(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """Every numeric metric's mean weighted by num_examples (as the Message API's FedAvg does)."""
    total = sum(n for n, _ in results)
    keys = sorted(
        {k for _, m in results for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    out: dict[str, Scalar] = {}
    for key in keys:
        pairs = [(n, float(cast(float, m[key]))) for n, m in results if isinstance(m.get(key), int | float)]
        weight = sum(n for n, _ in pairs)
        if weight > 0 and total > 0:
            out[key] = sum(n * v for n, v in pairs) / weight
    return out


class SecureMeanStrategy(FedAvg):
    """The legacy strategy SecAgg+ drives: the unmasked weighted mean becomes the global arrays.

    Args:
        settings: the run's settings (they travel to every silo in the fit and evaluate config).
        initial: the round-1 broadcast (names and shapes of every later round).
        grid: the metered grid the workflow talks through (bytes, error replies per node).
        output: the run's output directory.
    """

    def __init__(self, settings: TrainRunSettings, initial: ArrayRecord, grid: MeteredGrid, output: Path) -> None:
        deployment = settings.deployment
        self.names = list(initial)
        self.shapes = {name: tuple(array.shape) for name, array in initial.items()}
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=deployment.min_nodes,
            min_evaluate_clients=deployment.min_nodes,
            min_available_clients=deployment.min_nodes,
            initial_parameters=ndarrays_to_parameters([initial[n].numpy() for n in self.names]),
            on_fit_config_fn=self._config,
            on_evaluate_config_fn=self._config,
            fit_metrics_aggregation_fn=_weighted_metrics,
            evaluate_metrics_aggregation_fn=_weighted_metrics,
        )
        self.settings = settings
        self.grid = grid
        self.log = RoundLog(output, outcomes=self.outcomes)
        self.log.arrays = initial
        self.aggregated_rounds: list[int] = []
        self._encoded = settings_to_config(settings)
        self._sampled: dict[int, set[int]] = {}
        self._accepted: dict[int, set[int]] = {}
        self._fit: dict[int, Exchanges] = {}
        self._train_metrics: dict[str, Scalar] = {}

    def _config(self, server_round: int) -> dict[str, Scalar]:
        return {
            RUN_SETTINGS_KEY: self._encoded,
            ROUND_KEY: server_round,
            METHOD_KEY: self.settings.strategy,
            ARRAY_NAMES_KEY: json.dumps(self.names),
        }

    def _wait_for_silos(self, client_manager: ClientManager) -> None:
        deployment = self.settings.deployment
        if not client_manager.wait_for(deployment.min_nodes, timeout=math.ceil(deployment.start_timeout_s)):
            raise Unavailable(
                f"only {client_manager.num_available()} of the {deployment.min_nodes} silos needed "
                f"(deployment.min_nodes) connected within {deployment.start_timeout_s:g} s",
                code="not_enough_silos",
            )

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, Any]]:
        """Wait (bounded) for the silos, then send every available one the round's fit instructions."""
        self._wait_for_silos(client_manager)
        self.log.start_round()
        self._fit[server_round] = self.grid.begin()
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self._sampled[server_round] = {proxy.node_id for proxy, _ in instructions}
        return list(instructions)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Take SecAgg+'s unmasked weighted mean as the new global arrays.

        Raises:
            Unavailable: the unmasked mean does not have the broadcast's arrays (fail closed).
        """
        self._accepted[server_round] = {proxy.node_id for proxy, _ in results}
        if not results:
            return None, {}
        mean = parameters_to_ndarrays(results[0][1].parameters)
        if len(mean) != len(self.names):
            raise Unavailable(
                f"round {server_round}: SecAgg+ gave {len(mean)} arrays for {len(self.names)}", code=FAILED_CODE
            )
        arrays: dict[str, np.ndarray] = {}
        for name, value in zip(self.names, mean, strict=True):
            if tuple(value.shape) != self.shapes[name] or not np.all(np.isfinite(value)):
                raise Unavailable(
                    f"round {server_round}: the unmasked '{name}' has shape {value.shape} (sent "
                    f"{self.shapes[name]}) or is not finite",
                    code=FAILED_CODE,
                )
            arrays[name] = np.ascontiguousarray(value, dtype=np.float32)
        self.log.arrays = ArrayRecord({n: Array(v) for n, v in arrays.items()})
        self.aggregated_rounds.append(server_round)
        metrics = _weighted_metrics([(fit.num_examples, fit.metrics) for _, fit in results])
        sampled = self._sampled.get(server_round, set())
        metrics.update(
            {
                "nodes-sampled": len(sampled),
                "replies-accepted": len(results),
                "replies-clipped": 0,
                "replies-rejected": 0,
                "nodes-dropped": len(sampled - self._accepted[server_round]),
            }
        )
        self._train_metrics = metrics
        return ndarrays_to_parameters([arrays[n] for n in self.names]), metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, Any]]:
        """Send every available silo the new global arrays to evaluate (in the rounds that evaluate).

        In a round without evaluation (``evaluate = "last-round"``) the round's line is written here.
        """
        if self.settings.evaluate != "every-round" and server_round != self.settings.rounds:
            self._finish(server_round, {})
            return []
        self.grid.begin()
        return list(super().configure_evaluate(server_round, parameters, client_manager))

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """The weighted held-out loss; then write the round's line and checkpoint."""
        held = [(proxy, res) for proxy, res in results if int(cast(int, res.metrics.get("held-out", 0))) > 0]
        loss, metrics = super().aggregate_evaluate(server_round, held, []) if held else (None, {})
        self._finish(server_round, metrics)
        return loss, metrics

    def _finish(self, server_round: int, evaluate: dict[str, Scalar]) -> None:
        fit = self._fit.get(server_round, Exchanges())
        self.log.finish_round(
            server_round,
            down=list(fit.sent.values()),
            up=list(fit.received.values()),
            train=self._train_metrics,
            evaluate=evaluate,
            extra={"secure_aggregation": {"exchanges": fit.calls, "errors": len(fit.errors)}},
        )

    def outcomes(self, server_round: int) -> dict[int, tuple[str, str]]:
        """Node id → (status, reason) for a round: accepted into the masked sum, or dropped (why)."""
        fit = self._fit.get(server_round, Exchanges())
        accepted = self._accepted.get(server_round, set())
        out: dict[int, tuple[str, str]] = {}
        for node in sorted(self._sampled.get(server_round, set())):
            if node in accepted:
                out[node] = ("accepted", "in the masked sum")
            else:
                reason = fit.errors.get(node) or "; ".join(fit.unattributed_errors) or "no reply in time"
                out[node] = ("dropped", f"dropped out of secure aggregation: {reason}")
        return out


_STAGES = ("setup", "share keys", "collect masked vectors", "unmask")


class FailClosedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ fit workflow, but a halted round raises instead of being skipped.

    Flower logs "Secure aggregation halted" and goes on with the old arrays; here the round
    (and the run) fails with the stage, the silos still taking part and the threshold.
    """

    def __init__(self, strategy: SecureMeanStrategy, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid secure_aggregation settings: {exc}") from exc
        self.strategy = strategy
        self._halt = ""

    def _watch(self, stage: str, ok: bool, state: WorkflowState) -> bool:
        if not ok and not self._halt:
            reasons = sorted({str(getattr(f.args[0], "reason", f)) if f.args else str(f) for f in state.failures})
            self._halt = (
                f"stage '{stage}': {len(state.active_node_ids)} of {len(state.sampled_node_ids)} silos still "
                f"taking part, and every silo needs {state.threshold} live neighbours "
                f"(reconstruction_threshold) of its {state.num_shares} shares"
                + (f"; failures: {'; '.join(reasons)[:1500]}" if reasons else "")
            )
        return ok

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Flower's stage, watched."""
        return self._watch(_STAGES[0], super().setup_stage(grid, context, state), state)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Flower's stage, watched."""
        return self._watch(_STAGES[1], super().share_keys_stage(grid, context, state), state)

    def collect_masked_vectors_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Flower's stage, watched."""
        return self._watch(_STAGES[2], super().collect_masked_vectors_stage(grid, context, state), state)

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Flower's stage, watched."""
        return self._watch(_STAGES[3], super().unmask_stage(grid, context, state), state)

    def __call__(self, grid: Grid, context: Context) -> None:
        """Run one round of SecAgg+; raise if it did not end in an aggregate.

        Raises:
            Unavailable: the round halted (too many dropouts) or aggregated nothing.
        """
        self._halt = ""
        super().__call__(grid, context)
        current = cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        if current not in self.strategy.aggregated_rounds:
            why = self._halt or "no silo's masked update could be unmasked"
            raise Unavailable(f"secure aggregation failed in round {current}: {why}", code=FAILED_CODE)


def check_settings(settings: TrainRunSettings) -> None:
    """Refuse settings this app cannot run securely.

    Raises:
        ConfigError: secure aggregation is off, the strategy needs each update, client-level
            DP is on (its server-side clipping needs each update), or fewer than 3 silos.
    """
    if not settings.secure_aggregation.enabled:
        raise ConfigError("this app runs with secure_aggregation.enabled = true only; submit training/flower_app")
    if settings.strategy not in SECURE_STRATEGIES:
        raise ConfigError(f"secure aggregation gives only the weighted mean; {settings.strategy} needs each update")
    if settings.client_dp.enabled:
        raise ConfigError("client-level DP (server-side clipping) needs each update; it cannot run with SecAgg+")
    if settings.deployment.min_nodes < 3:
        raise ConfigError(
            "secure aggregation needs at least 3 silos (deployment.min_nodes): with 2, each learns the other's update"
        )


def run_secure(grid: Grid, context: Context, settings: TrainRunSettings) -> dict[str, Any]:
    """Run the training with SecAgg+ and write the output directory; returns the report.

    Raises:
        Unavailable: a round failed closed (the report, with ``error``, is written first).
    """
    check_settings(settings)
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model_dir = hf_model_dir()
    base = AdapterModel(model_dir, adapter_spec(settings))
    metered = MeteredGrid(grid, timeout=settings.deployment.round_timeout_s)
    strategy = SecureMeanStrategy(settings, initial_arrays(settings, base), metered, output)
    sa = settings.secure_aggregation
    fit_workflow = FailClosedSecAggPlus(
        strategy,
        num_shares=sa.num_shares,
        reconstruction_threshold=sa.reconstruction_threshold,
        max_weight=float(settings.local.max_examples),
        clipping_range=sa.clipping_range,
        quantization_range=sa.quantization_range,
        timeout=settings.deployment.round_timeout_s,
    )
    legacy = LegacyContext(
        context,
        config=ServerConfig(num_rounds=settings.rounds, round_timeout=settings.deployment.round_timeout_s),
        strategy=strategy,
        client_manager=SimpleClientManager(),
    )
    error: FedragError | None = None
    try:
        DefaultWorkflow(fit_workflow=fit_workflow)(metered, legacy)
    except FedragError as exc:
        error = exc
        logger.error("training stopped: %s", exc)
    final = strategy.log.arrays if strategy.aggregated_rounds else None
    adapter_dir = save_adapter(output, settings, final, model_dir) if final is not None else None
    report = build_report(settings, strategy.log, base, adapter_dir, time.monotonic() - started)
    report["secure_aggregation"] = {
        "num_shares": sa.num_shares,
        "reconstruction_threshold": sa.reconstruction_threshold,
        "clipping_range": sa.clipping_range,
        "quantization_range": sa.quantization_range,
        "max_weight": settings.local.max_examples,
        "exchanges_per_round": [r.get("secure_aggregation", {}).get("exchanges") for r in strategy.log.rounds],
    }
    if error is not None:
        report["error"] = {"code": error.code, "detail": str(error)}
    (output / REPORT_FILE).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if error is not None:
        raise error
    return report


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's entry point: read the settings from the run config and run with SecAgg+."""
    settings = settings_from_config(context.run_config.get(RUN_SETTINGS_KEY))
    report = run_secure(grid, context, settings)
    logger.info("secure training finished: %s", {k: report[k] for k in ("strategy", "rounds", "held_out_loss")})


__all__ = [
    "FAILED_CODE",
    "SECURE_STRATEGIES",
    "Exchanges",
    "FailClosedSecAggPlus",
    "MeteredGrid",
    "SecureMeanStrategy",
    "app",
    "check_settings",
    "main",
    "payload_bytes",
    "run_secure",
]
