"""Flower's deployment engine as processes: a SuperLink, SuperNodes, and run submission.

:class:`LocalDeployment` starts what a real federation runs on many machines, on loopback:
one ``flower-superlink`` (one HTTP port for the Fleet, Control and Runtime APIs) and one
``flower-supernode`` per silo, each with the silo's directory in its node config, with TLS
(a CA made for the deployment) and SuperNode authentication (each SuperNode's key
registered with the SuperLink) unless turned off. :func:`submit_run` and :func:`run_status`
talk to any SuperLink through Flower's own CLI (``flwr run`` / ``flwr ls``) with a
connection written into this deployment's ``FLWR_HOME``.

Every process gets the venv's ``bin`` on ``PATH`` (the SuperLink and SuperNodes start
``flower-superexec`` and ``flwr-clientapp``) and its own log file; :meth:`LocalDeployment.stop`
stops them all, so nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from federation.config import TrainRunSettings
from federation.errors import ConfigError, Unavailable
from federation.services import free_port
from silo_node.training_node import supernode_command
from training.tls import make_ca_and_server_cert, make_node_key

logger = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent / "flower_app"
SECAGG_APP_DIR = Path(__file__).resolve().parent / "secagg_app"
CONNECTION = "fedrag"


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def _flower_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(home)
    env["PATH"] = f"{_bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def write_connection(home: Path, address: str, *, root_certificates: Path | None) -> None:
    """Write the Flower CLI's connection to a SuperLink into ``home/config.toml``."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]", f'address = "{address}"']
    if root_certificates is not None:
        lines.append(f'root-certificates = "{root_certificates}"')
    else:
        lines.append("insecure = true")
    (home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _flwr(home: Path, *args: str, timeout: float = 120.0) -> dict[str, Any]:
    command = [str(_bin_dir() / "flwr"), *args, "--format", "json"]
    try:
        done = subprocess.run(  # noqa: S603 - our own arguments
            command, env=_flower_env(home), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(
            f"'flwr {args[0]}' did not answer within {timeout:g} s", code="superlink_unavailable"
        ) from exc
    try:
        reply = json.loads(done.stdout)
    except json.JSONDecodeError:
        reply = {"success": False, "error-message": (done.stderr or done.stdout).strip()[-2000:]}
    if not isinstance(reply, dict) or not reply.get("success"):
        message = reply.get("error-message") if isinstance(reply, dict) else None
        raise Unavailable(f"flwr {args[0]} failed: {message or done.stderr.strip()[-2000:]}", code="flower_error")
    return reply


def app_dir_for(settings: TrainRunSettings) -> Path:
    """The Flower App a run needs: the SecAgg+ app with secure aggregation on, else the plain one."""
    return SECAGG_APP_DIR if settings.secure_aggregation.enabled else APP_DIR


def submit_run(home: Path, run_settings: str, app_dir: Path = APP_DIR) -> str:
    """Submit a Flower App (default: the plain training app) with the encoded settings; returns Flower's run id."""
    reply = _flwr(home, "run", str(app_dir), CONNECTION, "--run-config", f'fedrag-run="{run_settings}"')
    return str(reply["run-id"])


def run_status(home: Path, run_id: str) -> dict[str, Any]:
    """Flower's view of one run (``status``: pending, starting, running, finished:completed / :failed …)."""
    runs = _flwr(home, "ls", CONNECTION, "--run-id", run_id).get("runs") or []
    if not runs:
        raise Unavailable(f"the SuperLink does not know run {run_id}", code="flower_error")
    return dict(runs[0])


def stop_run(home: Path, run_id: str) -> None:
    """Ask the SuperLink to stop a run (best effort)."""
    try:
        _flwr(home, "stop", run_id, CONNECTION, timeout=30)
    except Unavailable as exc:
        logger.warning("could not stop run %s: %s", run_id, exc)


def _wait_port(host: str, port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise Unavailable(f"{log.stem} exited with {process.returncode}:\n{tail}", code="flower_error")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise Unavailable(f"{log.stem} did not listen on {host}:{port} within {timeout:g} s", code="flower_error")


def _processes_naming(path: Path) -> list[int]:
    """Processes (other than this one) whose command line mentions ``path`` (Linux ``/proc``)."""
    needle = str(Path(path).resolve()).encode()
    found: list[int] = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (entry / "cmdline").read_bytes() and int(entry.name) != os.getpid():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class LocalDeployment:
    """A SuperLink and one SuperNode per silo, as processes on loopback.

    Args:
        workdir: where the deployment keeps its state, certificates, keys and logs.
        silos: silo name → silo directory.
        tls: TLS between everything, with a CA made for this deployment.
        node_auth: SuperNode authentication: only registered SuperNode keys may connect.
        model_dir: the base model directory given to every SuperNode (default: each node's cache).
    """

    workdir: Path
    silos: dict[str, Path]
    tls: bool = True
    node_auth: bool = True
    model_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    _processes: list[_Process] = field(default_factory=list)

    @property
    def home(self) -> Path:
        """The Flower CLI's home for this deployment (``FLWR_HOME``)."""
        return self.workdir / "flwr-home"

    @property
    def address(self) -> str:
        """The SuperLink's address (host:port)."""
        return f"{self.host}:{self.port}"

    def _spawn(self, name: str, command: list[str]) -> _Process:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as handle:
            popen = subprocess.Popen(  # noqa: S603 - our own arguments
                command, stdout=handle, stderr=subprocess.STDOUT, env=_flower_env(self.home), start_new_session=True
            )
        process = _Process(name, popen, log)
        self._processes.append(process)
        logger.info("started %s (pid %d): %s", name, popen.pid, shlex.join(command))
        return process

    def start(self, timeout: float = 60.0) -> LocalDeployment:
        """Start the SuperLink, register the SuperNodes' keys, start the SuperNodes."""
        if not self.silos:
            raise ConfigError("a local deployment needs at least one silo (deployment.silos)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        tls_args: list[str] = ["--insecure"]
        ca: Path | None = None
        if self.tls:
            ca, cert, key = make_ca_and_server_cert(self.workdir / "certs", hosts=[self.host, "localhost"])
            tls_args = ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        write_connection(self.home, self.address, root_certificates=ca)
        superlink = [
            str(_bin_dir() / "flower-superlink"),
            *tls_args,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--database",
            str(self.workdir / "superlink.db"),
            "--disable-runtime-dependency-installation",
        ]
        if self.node_auth:
            superlink.append("--enable-supernode-auth")
        link = self._spawn("superlink", superlink)
        _wait_port(self.host, self.port, link.popen, link.log, timeout)
        for name, silo_dir in sorted(self.silos.items()):
            auth_key = self._register_node(name) if self.node_auth else None
            command = supernode_command(
                Path(silo_dir),
                self.address,
                root_certificates=ca,
                auth_key=auth_key,
                port=free_port(),
                model_dir=self.model_dir,
            )
            self._spawn(f"supernode-{name}", command)
        return self

    def _register_node(self, name: str) -> Path:
        private, public = make_node_key(self.workdir / "node-keys" / name)
        _flwr(self.home, "supernode", "register", str(public), CONNECTION)
        return private

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every process this deployment started (SuperNodes first), with their children.

        Flower's SuperExec starts ServerApp and ClientApp processes of its own; any that are
        left (their command lines name this deployment's files) are stopped too.
        """
        for process in reversed(self._processes):
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in reversed(self._processes):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.popen.wait(remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(5)
        self._processes.clear()
        for pid in _processes_naming(self.workdir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def alive(self) -> dict[str, bool]:
        """Which processes are still running."""
        return {p.name: p.popen.poll() is None for p in self._processes}

    def logs(self) -> dict[str, Path]:
        """Each process's log file."""
        return {p.name: p.log for p in self._processes}

    def __enter__(self) -> LocalDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = [
    "APP_DIR",
    "CONNECTION",
    "SECAGG_APP_DIR",
    "LocalDeployment",
    "app_dir_for",
    "run_status",
    "stop_run",
    "submit_run",
    "write_connection",
]
