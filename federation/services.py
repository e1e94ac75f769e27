"""Run fedrag services as child processes (demos, benchmarks, tests): start, wait until ready, stop."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from federation.errors import Unavailable

FEDRAG = (sys.executable, "-m", "federation")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    timeout_s: float,
    verify: bool | ssl.SSLContext = True,
    what: str = "service",
) -> None:
    """Poll ``url`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise Unavailable(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=1.0, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise Unavailable(f"{what} was not ready at {url} within {timeout_s:.0f}s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes], *, grace_s: float = 15.0) -> None:
    """Terminate a child process, killing it if it does not exit within ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def fedrag_service(
    args: Sequence[str],
    ready_url: str,
    *,
    timeout_s: float = 120.0,
    verify: bool | ssl.SSLContext = True,
    log: Path | None = None,
    what: str = "service",
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``fedrag ARGS`` as a child process; yield it once ``ready_url`` answers; stop it after.

    Args:
        args: arguments of the ``fedrag`` command.
        ready_url: health or readiness URL to poll.
        timeout_s: how long to wait for readiness.
        verify: TLS verification for the probe.
        log: file for the child's output (default: inherit the terminal).
        what: name used in error messages.
        env: extra environment variables for the child (e.g. ``FEDRAG_SILO_*`` overrides).
    """
    sink: IO[bytes] | None = open(log, "ab") if log is not None else None  # noqa: SIM115
    try:
        proc = subprocess.Popen(  # noqa: S603
            [*FEDRAG, *args],
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT if sink else None,
        )
        try:
            wait_ready(proc, ready_url, timeout_s=timeout_s, verify=verify, what=what)
            yield proc
        finally:
            stop(proc)
    finally:
        if sink is not None:
            sink.close()
