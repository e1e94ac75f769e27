"""The ClientApp of the SecAgg+ training app (``training/secagg_app``), at each silo.

Flower 1.42 has SecAgg+ only on its legacy API, so this ClientApp is built from a
``client_fn`` whose :class:`~flwr.client.NumPyClient` does the same work as the Message-API
app (:mod:`training.client_app`): :meth:`SiloTrainer.train` on the global arrays, the same
metrics. Flower's ``secaggplus_mod`` wraps it: the silo's arrays never leave in the clear,
only quantised, masked vectors whose sum the server can unmask (the metrics do travel in
the clear, as in the plain app).

The arrays travel as a list; their names come in the config (:data:`ARRAY_NAMES_KEY`,
a JSON list in the broadcast's order). A silo replies with exactly those names and
shapes, in that order, or fails its round (a masked sum cannot be checked per silo, so
the check is the silo's own).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Context
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import NDArrays, Scalar

from federation.config import TrainRunSettings
from federation.errors import ConfigError, ValidationFailed
from training.run_config import RUN_SETTINGS_KEY, settings_from_config

if TYPE_CHECKING:
    from training.silo_trainer import SiloTrainer

logger = logging.getLogger(__name__)

ARRAY_NAMES_KEY = "array-names"
ROUND_KEY = "server-round"


def array_names(config: dict[str, Scalar], count: int) -> list[str]:
    """The names of the ``count`` arrays a message carries (its config's JSON list).

    Raises:
        ConfigError: no such list, or it does not name ``count`` distinct arrays.
    """
    raw = config.get(ARRAY_NAMES_KEY)
    try:
        names = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"the message's config has no JSON list '{ARRAY_NAMES_KEY}'")
    if len(names) != count or len(set(names)) != count:
        raise ConfigError(f"'{ARRAY_NAMES_KEY}' names {len(names)} arrays, the message carries {count}")
    return [str(n) for n in names]


def _trainer(context: Context) -> SiloTrainer:
    # Imported here, not at module level: Flower starts a ClientApp process per message and
    # three of SecAgg+'s four stages never reach the client, so they skip the training stack.
    from training.client_app import silo_trainer

    return silo_trainer(context)


class SiloClient(NumPyClient):
    """One silo's round under SecAgg+ (the NumPyClient that ``secaggplus_mod`` masks)."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def _settings(self, config: dict[str, Scalar]) -> TrainRunSettings:
        return settings_from_config(config.get(RUN_SETTINGS_KEY))

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train on the silo's examples; reply with the arrays in the order received."""
        settings = self._settings(config)
        names = array_names(config, len(parameters))
        round_ = config.get(ROUND_KEY)
        if not isinstance(round_, int):
            raise ConfigError(f"the fit config has no integer '{ROUND_KEY}'")
        received = dict(zip(names, parameters, strict=True))
        trainer = _trainer(self.context)
        try:
            outcome = trainer.train(settings, received, run_id=str(self.context.run_id), round_=round_)
        finally:
            trainer.close()
        if sorted(outcome.arrays) != sorted(names):
            raise ValidationFailed("the trained adapter's arrays are not the ones received", code="secagg_mismatch")
        reply = [np.ascontiguousarray(outcome.arrays[n], dtype=np.float32) for n in names]
        for name, sent, back in zip(names, parameters, reply, strict=True):
            if sent.shape != back.shape or not np.all(np.isfinite(back)):
                raise ValidationFailed(f"array '{name}' changed shape or is not finite", code="secagg_mismatch")
        if outcome.result.examples < 1:
            raise ValidationFailed("no training example fitted max_length: nothing to add to the sum")
        from training.client_app import round_metrics

        metrics: dict[str, Scalar] = {k: v for k, v in round_metrics(outcome).items() if not isinstance(v, list)}
        return reply, outcome.result.examples, metrics

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        """Held-out loss of the global arrays on the silo's held-out documents."""
        settings = self._settings(config)
        arrays = dict(zip(array_names(config, len(parameters)), parameters, strict=True))
        trainer = _trainer(self.context)
        try:
            count, loss = trainer.evaluate(settings, arrays)
        finally:
            trainer.close()
        value = loss if count else 0.0
        return value, max(count, 1), {"eval_loss": value, "held-out": count}


def client_fn(context: Context) -> Client:
    """Flower's factory: one :class:`SiloClient` per message."""
    return SiloClient(context).to_client()


app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])

__all__ = ["ARRAY_NAMES_KEY", "ROUND_KEY", "SiloClient", "app", "array_names", "client_fn"]
