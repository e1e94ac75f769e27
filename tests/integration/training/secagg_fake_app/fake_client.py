"""A fake silo for SecAgg+ tests: it sends known arrays instead of training (a transport-seam fake).

Each SuperNode's silo directory holds ``fake.json`` (``{"index": i, "examples": n}``); the
silo replies to a fit with :func:`known_update` for every array it was sent, weighted by
``n``. A file ``fail`` in the directory makes its fit raise; a file ``hang`` makes it write
``fitting`` and sleep (so a test can kill its SuperNode after it has shared its keys).
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import NDArrays, Scalar

from training.secagg_client import ROUND_KEY, array_names

FAKE_FILE = "fake.json"


def known_update(index: int, name: str, shape: tuple[int, ...], server_round: int) -> np.ndarray:
    """The array silo ``index`` sends for ``name`` in ``server_round`` (seeded, within ±0.25)."""
    rng = np.random.default_rng([index, server_round, zlib.crc32(name.encode())])
    return np.clip(rng.standard_normal(shape) * 0.05, -0.25, 0.25).astype(np.float32)


class FakeSilo(NumPyClient):
    """Replies with known arrays (fit) and a fixed loss (evaluate)."""

    def __init__(self, context: Context) -> None:
        self.silo_dir = Path(str(context.node_config["silo-dir"]))
        self.spec = json.loads((self.silo_dir / FAKE_FILE).read_text(encoding="utf-8"))

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Known arrays, in the order received."""
        if (self.silo_dir / "fail").exists():
            raise RuntimeError(f"fake silo {self.spec['index']} fails in fit")
        if (self.silo_dir / "hang").exists():
            (self.silo_dir / "fitting").write_text("1", encoding="utf-8")
            time.sleep(600)
        names = array_names(config, len(parameters))
        round_ = int(config[ROUND_KEY])
        index = int(self.spec["index"])
        arrays = [known_update(index, n, p.shape, round_) for n, p in zip(names, parameters, strict=True)]
        return arrays, int(self.spec["examples"]), {"train_loss": float(index)}

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        """A fixed held-out loss."""
        return 1.0, 1, {"eval_loss": 1.0, "held-out": 1}


def client_fn(context: Context) -> Client:
    """Flower's factory."""
    return FakeSilo(context).to_client()


app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
