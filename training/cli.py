"""``fedrag train …``: federated adapter training on Flower, its report, and its export."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from federation.config import TrainRunSettings, load_train_settings
from federation.errors import ConfigError, Conflict, Unavailable
from federation.progress import progress
from training.adapter_files import ADAPTER_DIR, REPORT_FILE, adapter_config
from training.deployment import LocalDeployment, app_dir_for, run_status, stop_run, submit_run, write_connection
from training.recorder import CHECKPOINT_FILE, PROGRESS_FILE
from training.run_config import settings_to_config

console = Console()
err_console = Console(stderr=True)
app = typer.Typer(
    help="Federated training of LoRA adapters and soft prompts on the silos' data (Flower).", no_args_is_help=True
)


@app.callback()
def main() -> None:
    """Federated training of LoRA adapters and soft prompts on the silos' data (Flower)."""


def _prepare_output(output: Path, force: bool) -> None:
    if (output / REPORT_FILE).exists() or (output / PROGRESS_FILE).exists():
        if not force:
            raise Conflict(f"{output} already holds a training run; use --force to replace it", code="output_exists")
        for name in (REPORT_FILE, PROGRESS_FILE, CHECKPOINT_FILE):
            (output / name).unlink(missing_ok=True)
        shutil.rmtree(output / ADAPTER_DIR, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)


def _rounds_done(output: Path) -> list[dict[str, Any]]:
    path = output / PROGRESS_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def follow_run(
    home: Path, run_id: str, settings: TrainRunSettings, *, poll_s: float = 2.0, status_every_s: float = 30.0
) -> dict[str, Any]:
    """Show progress per round until the run ends; returns its report.

    Progress comes from the output directory; the SuperLink is asked for the run's status
    (a ``flwr ls``, which costs seconds of CPU) when the report appears and every
    ``status_every_s`` otherwise, to notice a failed run.

    Raises:
        Unavailable: the run failed or was stopped.
    """
    output = settings.output
    status: dict[str, Any] = {"status": "pending"}
    last_status_check = time.monotonic()
    with progress(
        err_console, TextColumn("{task.description}"), BarColumn(),
        TextColumn("round {task.completed}/{task.total}"), TimeElapsedColumn(),
    ) as bar:  # fmt: skip
        task = bar.add_task(f"training ({settings.strategy})", total=settings.rounds)
        seen = 0
        while True:
            rounds = _rounds_done(output)
            for entry in rounds[seen:]:
                train, loss = entry.get("train", {}), entry.get("evaluate", {}).get("eval_loss")
                before = train.get("held_out_loss_before")
                after = f", after: {loss:.4f}" if isinstance(loss, float) else ""
                bar.console.print(
                    f"round {entry['round']}: held-out loss before: {_fmt(before)}{after}; train loss "
                    f"{_fmt(train.get('train_loss'))}; {train.get('replies-accepted', 0)} of "
                    f"{train.get('nodes-sampled', 0)} silos accepted; {entry['seconds']:.0f} s"
                )
            seen = len(rounds)
            bar.update(task, completed=seen)
            now = time.monotonic()
            if (output / REPORT_FILE).is_file() or now - last_status_check >= status_every_s:
                last_status_check = now
                status = run_status(home, run_id)
                if str(status.get("status", "")).startswith("finished"):
                    break
            time.sleep(poll_s)
    if status.get("status") != "finished:completed" or not (output / REPORT_FILE).is_file():
        raise Unavailable(
            f"training run {run_id} ended as {status.get('status')} ({status.get('status-details')}); "
            f"see the logs under {output / '.flower' / 'logs'} and `flwr log {run_id}`",
            code="training_failed",
        )
    return dict(json.loads((output / REPORT_FILE).read_text(encoding="utf-8")))


def run_training(settings: TrainRunSettings, *, force: bool = False) -> dict[str, Any]:
    """Run a training as configured: start a local deployment or use a running SuperLink."""
    output = Path(settings.output)
    _prepare_output(output, force)
    deployment = settings.deployment
    workdir = output / ".flower"
    if deployment.superlink == "local":
        silos = {s.name: s.dir for s in deployment.silos}
        if len(silos) < deployment.min_nodes:
            raise ConfigError(f"deployment.min_nodes is {deployment.min_nodes} but only {len(silos)} silos are listed")
        for silo_dir in silos.values():
            if not (silo_dir / "silo.toml").is_file():
                raise ConfigError(f"{silo_dir} is not a silo directory (no silo.toml)")
        with LocalDeployment(workdir, silos, tls=deployment.tls, node_auth=deployment.node_auth) as local:
            err_console.print(f"SuperLink at {local.address} with {len(silos)} SuperNodes ({', '.join(sorted(silos))})")
            run_id = submit_run(local.home, settings_to_config(settings), app_dir_for(settings))
            try:
                return follow_run(local.home, run_id, settings)
            except KeyboardInterrupt:
                stop_run(local.home, run_id)
                raise
    home = workdir / "flwr-home"
    write_connection(home, deployment.superlink, root_certificates=deployment.root_certificates)
    run_id = submit_run(home, settings_to_config(settings), app_dir_for(settings))
    err_console.print(f"submitted run {run_id} to {deployment.superlink}")
    return follow_run(home, run_id, settings)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_report(report: dict[str, Any]) -> None:
    """The run's summary and one row per round."""
    table = Table(title=f"training run: {report['strategy']}, {report['rounds']} rounds, {report['seconds']} s")
    for column in ("round", "held-out loss", "train loss", "seconds", "bytes up / silo", "bytes down / silo", "silos"):
        table.add_column(column, justify="right")
    table.add_row("0", _fmt(report.get("held_out_loss_before")), "–", "–", "–", "–", "–")
    for i, loss in enumerate(report["held_out_loss"]):
        nodes = report["nodes"][i] if i < len(report["nodes"]) else {}
        taken = sum(1 for n in nodes.values() if n["status"] in ("accepted", "clipped"))
        table.add_row(
            str(i + 1),
            _fmt(loss),
            _fmt(report["train_loss"][i]),
            _fmt(report["round_seconds"][i], 1),
            f"{report['bytes_up_per_silo'][i]:,}",
            f"{report['bytes_down_per_silo'][i]:,}",
            f"{taken}/{len(nodes)}",
        )
    console.print(table)
    console.print(f"full fine-tuning would send {report['full_fine_tuning_bytes']:,} bytes per silo per round")
    if report.get("fedavg_lora_error"):
        errors = ", ".join(_fmt(e) for e in report["fedavg_lora_error"])
        console.print(f"FedAvg of LoRA: relative error of mean(B)·mean(A) against mean(B·A) per round: {errors}")
    if report.get("client_level_epsilon") is not None:
        console.print(f"client-level epsilon: {report['client_level_epsilon']:.2f}")
    if report.get("record_level_epsilon") is not None:
        console.print(f"record-level epsilon (per silo, DP-SGD): {report['record_level_epsilon']:.2f}")
    for i, nodes in enumerate(report["nodes"], start=1):
        for node, outcome in nodes.items():
            if outcome["status"] not in ("accepted",):
                console.print(f"round {i}: node {node} {outcome['status']}: {outcome['reason']}")
    console.print(f"adapter: {report.get('adapter') or 'none (nothing was aggregated)'}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command("run")
def run(
    config: Annotated[
        Path, typer.Option("--config", help="The run's TOML file (strategy, rounds, silos, DP, SecAgg).")
    ],
    force: Annotated[bool, typer.Option(help="Replace a previous run in the output directory.")] = False,
) -> None:
    """Train a federated adapter across silos in Flower's deployment engine.

    With deployment.superlink = "local" this starts a SuperLink and one SuperNode per
    listed silo on loopback (TLS and SuperNode authentication on by default); otherwise it
    submits to the SuperLink at that address, whose SuperNodes the silo operators started
    with `fedrag silo train-node`. Progress is shown per round; the adapter and report.json
    are written to the configured output directory.
    """
    settings = load_train_settings(config)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a stopped command stops the deployment it started
    try:
        report = run_training(settings, force=force)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_report(report)


@app.command("report")
def report(directory: Annotated[Path, typer.Argument(help="A training run's output directory.")]) -> None:
    """Print a finished run's report (losses, bytes, time and epsilon per round)."""
    path = directory / REPORT_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} holds no finished training run ({REPORT_FILE} is missing)")
    print_report(json.loads(path.read_text(encoding="utf-8")))


@app.command("export")
def export(
    directory: Annotated[Path, typer.Argument(help="A training run's output directory.")],
    format_: Annotated[
        Literal["gguf", "peft"],
        typer.Option("--format", help="gguf: a llama.cpp LoRA for `fedrag llm serve --lora`; peft: for vLLM."),
    ] = "gguf",
    out: Annotated[Path | None, typer.Option(help="Where to write it (default: DIR/adapter.gguf or DIR/peft).")] = None,
) -> None:
    """Export the trained adapter for serving."""
    adapter_dir = directory / ADAPTER_DIR
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{directory} holds no adapter ({adapter_dir} is missing); run fedrag train run first")
    if format_ == "peft":
        target = out or directory / "peft"
        if target.resolve() != adapter_dir.resolve():
            shutil.copytree(adapter_dir, target, dirs_exist_ok=True)
        typer.echo(str(target.resolve()))
        return
    if adapter_config(adapter_dir).get("peft_type") != "LORA":
        raise ConfigError("only LoRA adapters can be exported to GGUF; serve soft prompts with vLLM (--format peft)")
    from training.export import export_llamacpp_lora

    target = export_llamacpp_lora(adapter_dir, out or directory / "adapter.gguf")
    typer.echo(str(target.resolve()))
