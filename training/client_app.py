"""The Flower ClientApp that runs at each silo (Message API).

A silo operator starts a SuperNode with the silo's directory in its node config
(``fedrag silo train-node DIR --superlink HOST:PORT``, or ``flower-supernode --node-config
'silo-dir="DIR"'``); the SuperNode runs this app for every message of a run. The handlers
only translate Flower messages for :class:`training.silo_trainer.SiloTrainer`. A silo whose
policy refuses a run raises, which Flower turns into an error reply: the server records
that silo as not taking part in the round.

Node config keys: ``silo-dir`` (required), ``model-dir`` (optional: a transformers copy of
the base model; default the cached conversion of the embedded GGUF).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation.errors import ConfigError
from training.run_config import RUN_SETTINGS_KEY, settings_from_config
from training.silo_trainer import RoundOutcome, SiloTrainer

logger = logging.getLogger(__name__)

app = ClientApp()


def silo_trainer(context: Context) -> SiloTrainer:
    """The trainer of the silo this SuperNode serves (its node config's ``silo-dir``).

    Raises:
        ConfigError: the node config names no silo.
    """
    silo_dir = context.node_config.get("silo-dir")
    if not isinstance(silo_dir, str) or not silo_dir:
        raise ConfigError("this SuperNode has no silo: start it with --node-config 'silo-dir=\"/path/to/silo\"'")
    model_dir = context.node_config.get("model-dir")
    return SiloTrainer(Path(silo_dir), model_dir=Path(model_dir) if isinstance(model_dir, str) and model_dir else None)


def _arrays(message: Message) -> dict[str, np.ndarray]:
    record = message.content.array_records.get("arrays") or ArrayRecord()
    return {name: array.numpy() for name, array in record.items()}


def _record(arrays: dict[str, np.ndarray], order: list[str]) -> ArrayRecord:
    """The reply's arrays, in the order received (Flower's DP wrappers pair them by position)."""
    names = [n for n in order if n in arrays] + sorted(n for n in arrays if n not in order)
    return ArrayRecord({n: Array(np.ascontiguousarray(arrays[n], dtype=np.float32)) for n in names})


def round_metrics(outcome: RoundOutcome) -> dict[str, int | float | list[int] | list[float]]:
    """The numbers a silo reports with its round's update (``num-examples`` weighs it)."""
    metrics: dict[str, int | float | list[int] | list[float]] = {
        "num-examples": outcome.result.examples,
        "train_loss": outcome.result.loss,
        "steps": outcome.result.steps,
        "lora-scaling": outcome.scaling,
    }
    if not np.isnan(outcome.held_out_loss_before):
        metrics["held_out_loss_before"] = outcome.held_out_loss_before
    if outcome.result.epsilon is not None:
        metrics["record-epsilon"] = outcome.result.epsilon
    return metrics


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the silo's adapter for one round on its own examples."""
    config = message.content.config_records["config"]
    settings = settings_from_config(config[RUN_SETTINGS_KEY])
    round_ = config.get("server-round", 0)
    if not isinstance(round_, int):
        raise ConfigError("the train message's config has no integer 'server-round'")
    received = _arrays(message)
    trainer = silo_trainer(context)
    try:
        outcome = trainer.train(settings, received, run_id=str(message.metadata.run_id), round_=round_)
    finally:
        trainer.close()
    metrics = round_metrics(outcome)
    content = RecordDict({"arrays": _record(outcome.arrays, list(received)), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Held-out loss of the global adapter on the silo's held-out documents."""
    config = message.content.config_records["config"]
    settings = settings_from_config(config[RUN_SETTINGS_KEY])
    trainer = silo_trainer(context)
    try:
        count, loss = trainer.evaluate(settings, _arrays(message))
    finally:
        trainer.close()
    metrics = MetricRecord({"num-examples": count, "eval_loss": loss, "held-out": count})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=message)
