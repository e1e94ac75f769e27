"""The Flower ServerApp: aggregate the silos' adapters with our strategies, write the result.

``fedrag train run`` submits this app (``training/flower_app``) with the run's settings in
the run config. The server holds no silo data: it builds the initial adapter from the public
base model, runs the strategy for the configured rounds (optionally inside Flower's
client-level DP wrapper), and writes into the run's output directory:

- ``progress.jsonl``: one line per round (time, bytes per silo, metrics, node outcomes);
- ``checkpoint.npz``: the global arrays after the last finished round;
- ``adapter/``: the final adapter as a peft directory (LoRA or prompt);
- ``report.json``: the run's summary (losses, epsilon, bytes, times).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy

from federation.config import TrainRunSettings
from training.adapter_files import REPORT_FILE, save_adapter
from training.base_model import hf_model_dir
from training.local import AdapterModel
from training.privacy import client_level_epsilon
from training.recorder import RecordingStrategy, RoundLog
from training.run_config import RUN_SETTINGS_KEY, settings_from_config, settings_to_config
from training.silo_trainer import adapter_spec
from training.strategies import AdapterStrategy, FFALoRA, FLoRA, make_strategy

logger = logging.getLogger(__name__)

app = ServerApp()


def build_strategy(settings: TrainRunSettings) -> tuple[AdapterStrategy, Strategy]:
    """(our strategy, the strategy that runs: ours, or Flower's DP wrapper around it)."""
    deployment = settings.deployment
    options: dict[str, Any] = {
        "min_available_nodes": deployment.min_nodes,
        "min_train_nodes": deployment.min_nodes,
        "min_evaluate_nodes": deployment.min_nodes,
        "uniform_weights": settings.client_dp.enabled,
    }
    if settings.max_update_norm is not None:
        options["max_norm"] = settings.max_update_norm
    if settings.strategy == "ffa-lora":
        options["seed"] = settings.adapter.seed
    elif settings.strategy == "flora":
        options["max_rank"] = settings.adapter.max_rank
    elif settings.strategy == "prompt-cluster":
        options["k"] = settings.clusters
        options["seed"] = settings.adapter.seed
    ours = make_strategy(settings.strategy, **options)
    if not settings.client_dp.enabled:
        return ours, ours
    dp = settings.client_dp
    wrapped = DifferentialPrivacyServerSideFixedClipping(
        ours,
        noise_multiplier=dp.noise_multiplier,
        clipping_norm=dp.clipping_norm,
        num_sampled_clients=deployment.min_nodes,
    )
    return ours, wrapped


def initial_arrays(settings: TrainRunSettings, model: AdapterModel) -> ArrayRecord:
    """The round-1 broadcast: the peft-initialised adapter in the form the strategy sends."""
    adapter = model.all_arrays()
    if settings.strategy == "ffa-lora":
        return FFALoRA.initial_arrays(adapter)
    if settings.strategy == "flora":
        return FLoRA.initial_arrays(adapter)
    return ArrayRecord({name: Array(value) for name, value in adapter.items()})


def run(grid: Grid, settings: TrainRunSettings) -> dict[str, Any]:
    """Run the federated training and write the output directory; returns the report."""
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model_dir = hf_model_dir()
    base = AdapterModel(model_dir, adapter_spec(settings))
    ours, running = build_strategy(settings)

    def outcomes(server_round: int) -> dict[int, tuple[str, str]]:
        report = ours.reports.get(server_round)
        return {n: (o.status, o.reason) for n, o in report.outcomes.items()} if report else {}

    every = settings.evaluate == "every-round"
    recorder = RecordingStrategy(
        running, output, outcomes=outcomes, evaluate_round=lambda r: every or r == settings.rounds
    )
    encoded = settings_to_config(settings)
    result = recorder.start(
        grid,
        initial_arrays(settings, base),
        num_rounds=settings.rounds,
        timeout=settings.deployment.round_timeout_s,
        train_config=ConfigRecord({RUN_SETTINGS_KEY: encoded}),
        evaluate_config=ConfigRecord({RUN_SETTINGS_KEY: encoded}),
    )
    final = result.arrays if len(result.arrays) else recorder.arrays
    adapter_dir = save_adapter(output, settings, final, model_dir) if final is not None else None
    report = build_report(settings, recorder, base, adapter_dir, time.monotonic() - started)
    (output / REPORT_FILE).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def held_out_losses(rounds: list[dict[str, Any]]) -> list[float | None]:
    """The held-out loss after each round.

    From that round's evaluation, or else from the next round's training replies (each silo
    measures the arrays it receives before it trains).
    """
    losses: list[float | None] = []
    for i, entry in enumerate(rounds):
        loss = entry["evaluate"].get("eval_loss")
        if loss is None and i + 1 < len(rounds):
            loss = rounds[i + 1]["train"].get("held_out_loss_before")
        losses.append(loss)
    return losses


def build_report(
    settings: TrainRunSettings,
    recorder: RoundLog,
    base: AdapterModel,
    adapter_dir: Path | None,
    seconds: float,
) -> dict[str, Any]:
    """The run's summary for ``report.json`` (either app: plain or SecAgg+)."""
    rounds = recorder.rounds
    first_train = rounds[0]["train"] if rounds else {}
    full_bytes = sum(p.numel() for p in base.model.get_base_model().parameters()) * 4
    epsilon = None
    if settings.client_dp.enabled:
        epsilon = client_level_epsilon(settings.client_dp.noise_multiplier, 1.0, len(rounds), settings.client_dp.delta)
    record_eps = [r["train"].get("record-epsilon") for r in rounds if r["train"].get("record-epsilon") is not None]
    return {
        "strategy": settings.strategy,
        "rounds": len(rounds),
        "seconds": round(seconds, 1),
        "held_out_loss_before": first_train.get("held_out_loss_before"),
        "held_out_loss": held_out_losses(rounds),
        "train_loss": [r["train"].get("train_loss") for r in rounds],
        "round_seconds": [r["seconds"] for r in rounds],
        "bytes_up_per_silo": [r["bytes_up_per_silo"] for r in rounds],
        "bytes_down_per_silo": [r["bytes_down_per_silo"] for r in rounds],
        "full_fine_tuning_bytes": full_bytes,
        "fedavg_lora_error": [r["train"].get("fedavg-lora-error") for r in rounds]
        if settings.strategy == "fedavg-lora"
        else None,
        "client_level_epsilon": epsilon,
        "record_level_epsilon": record_eps[-1] if record_eps else None,
        "nodes": [r.get("nodes", {}) for r in rounds],
        "adapter": str(adapter_dir) if adapter_dir else None,
        "settings": json.loads(settings.model_dump_json()),
    }


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's entry point: read the settings from the run config and run."""
    settings = settings_from_config(context.run_config.get(RUN_SETTINGS_KEY))
    report = run(grid, settings)
    logger.info("training finished: %s", {k: report[k] for k in ("strategy", "rounds", "held_out_loss", "adapter")})
