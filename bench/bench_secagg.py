"""The cost of SecAgg+ (issue 9): the same federated run with plain FedAvg and with secure aggregation.

Both runs train the same adapter with the same settings on the same silos, one after the
other, each in its own local deployment (a SuperLink and one SuperNode per silo on loopback,
TLS and SuperNode authentication on), through ``training.cli.run_training``. Reported per
run: seconds per round, payload bytes per silo per round (plain: the adapter's float32
arrays each way; SecAgg+: every exchange of the fit phase, i.e. keys, encrypted shares,
masked vectors and unmasking shares), exchanges per round, and the held-out loss.

The federation directory must hold ``silos/<name>`` for each ``--silo`` with training
allowed and ``require_record_dp = false`` (``eval.builder.build_federation`` and
``policy.training``). It is copied, so the silos' caches of the two runs are the same.
Example:

    .venv/bin/python bench/bench_secagg.py --federation /tmp/secagg-fed --out /tmp/secagg-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from federation.config import DeploymentSiloSettings, TrainRunSettings
from training.cli import run_training


def _settings(args: argparse.Namespace, fed: Path, out: Path, *, secure: bool) -> TrainRunSettings:
    settings = TrainRunSettings(strategy=args.strategy, rounds=args.rounds, output=out)
    settings.local.max_examples = args.max_examples
    settings.local.max_steps = args.max_steps
    settings.local.batch_size = 2
    settings.local.sources = 1
    settings.local.learning_rate = 5e-3
    settings.secure_aggregation.enabled = secure
    settings.deployment.min_nodes = len(args.silo)
    settings.deployment.round_timeout_s = 900
    settings.deployment.silos = [DeploymentSiloSettings(name=n, dir=fed / "silos" / n) for n in args.silo]
    return settings


def _summary(name: str, report: dict[str, Any]) -> dict[str, Any]:
    rounds = report["round_seconds"]
    return {
        "run": name,
        "rounds": report["rounds"],
        "seconds_per_round": [round(s, 1) for s in rounds],
        "mean_round_s": round(sum(rounds) / max(len(rounds), 1), 1),
        "bytes_up_per_silo": report["bytes_up_per_silo"],
        "bytes_down_per_silo": report["bytes_down_per_silo"],
        "exchanges_per_round": (report.get("secure_aggregation") or {}).get("exchanges_per_round", [1] * len(rounds)),
        "held_out_loss_before": report["held_out_loss_before"],
        "held_out_loss": report["held_out_loss"],
    }


def main() -> None:
    """Run both and print one JSON line per run, then the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--federation", type=Path, required=True, help="A federation root with silos/<name>.")
    parser.add_argument("--out", type=Path, required=True, help="Where the two runs are written (replaced).")
    parser.add_argument("--silo", action="append", default=None, help="Silo names (default: mondo, hpo, cl).")
    parser.add_argument("--strategy", default="fedavg-lora", choices=["fedavg-lora", "ffa-lora", "prompt-avg"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-examples", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=2)
    args = parser.parse_args()
    args.silo = args.silo or ["mondo", "hpo", "cl"]
    shutil.rmtree(args.out, ignore_errors=True)
    fed = args.out / "fed"
    shutil.copytree(args.federation, fed)
    results = []
    for name, secure in (("plain", False), ("secagg+", True)):
        report = run_training(_settings(args, fed, args.out / name, secure=secure))
        results.append(_summary(name, report))
        print(json.dumps(results[-1]), flush=True)
    plain, secure_ = results
    ratios = {
        "round_time_x": round(secure_["mean_round_s"] / max(plain["mean_round_s"], 1e-9), 2),
        "bytes_up_x": round(secure_["bytes_up_per_silo"][0] / max(plain["bytes_up_per_silo"][0], 1), 2),
        "bytes_down_x": round(secure_["bytes_down_per_silo"][0] / max(plain["bytes_down_per_silo"][0], 1), 2),
    }
    print(json.dumps({"secagg_vs_plain": ratios}))


if __name__ == "__main__":
    main()
