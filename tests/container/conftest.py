"""The container tests' engine: the images built once per session, every container started removed after."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.container.engine import REPO, Engine, find_engine


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    command, env = find_engine()
    subprocess.run(
        ["bash", str(REPO / "deploy" / "images.sh")],
        check=True,
        env={**env, "ENGINE": command},
        timeout=3600,
    )
    eng = Engine(command, env, [])
    yield eng
    for name in eng.started:
        subprocess.run([command, "rm", "-f", name], capture_output=True, env=env)
