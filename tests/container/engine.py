"""The container engine the container tests drive: Docker with a daemon, else podman with runc."""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.container.commands import ContainerHost, render

REPO = Path(__file__).resolve().parents[2]
UID = 10001


def find_engine() -> tuple[str, dict[str, str]]:
    """The engine command and its environment, as ``deploy/engine.sh`` picks them for the scripts.

    Docker with a running daemon, else podman with the containers.conf the script writes (runc, no
    default ulimits); skipped when the script finds no engine.
    """
    shown = 'source deploy/engine.sh && printf "%s\\n%s\\n" "$ENGINE" "${CONTAINERS_CONF:-}"'
    done = subprocess.run(["bash", "-c", shown], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"no container engine: {done.stderr.strip()}")
    engine, conf = done.stdout.splitlines()
    env = dict(os.environ)
    if conf:
        env["CONTAINERS_CONF"] = conf
    return engine, env


def chown_to_container_user(root: Path) -> None:
    """What the README says: the volume belongs to the container's uid."""
    for path in [root, *root.rglob("*")]:
        os.chown(path, UID, UID)


@dataclass
class Engine:
    command: str
    env: dict[str, str]
    started: list[str]

    def run(self, argv: list[str], *, timeout: float = 600) -> str:
        """Run an engine command (or any command with the engine's environment); its stdout."""
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def step(self, template: str, host: ContainerHost, *, timeout: float = 600) -> str:
        argv = render(template, host)
        if "-d" in argv and "--name" in argv:
            self.started.append(argv[argv.index("--name") + 1])
        return self.run(argv, timeout=timeout)

    def logs(self, name: str) -> str:
        done = subprocess.run([self.command, "logs", name], capture_output=True, text=True, env=self.env)
        return (done.stdout + done.stderr)[-4000:]

    def wait_ready(
        self, url: str, *, container: str, verify: bool | ssl.SSLContext = True, timeout_s: float = 240
    ) -> None:
        """Poll ``url`` until it answers 200; fail with ``container``'s log if it stops or takes too long."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            running = subprocess.run(
                [self.command, "inspect", "-f", "{{.State.Running}}", container],
                capture_output=True,
                text=True,
                env=self.env,
            ).stdout.strip()
            assert running == "true", f"container {container} stopped:\n{self.logs(container)}"
            try:
                if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        pytest.fail(f"{container} was not ready at {url} within {timeout_s:.0f} s:\n{self.logs(container)}")
