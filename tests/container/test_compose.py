"""deploy/compose.yaml as the README runs it: compose-init.sh, then podman-compose up, then a question."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from federation.services import free_port
from tests.container.engine import REPO, Engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

COMPOSE = [str(Path(sys.executable).with_name("podman-compose")), "-f", str(REPO / "deploy" / "compose.yaml")]


@pytest.fixture
def federation_home(engine: Engine, tmp_path: Path) -> Path:
    """compose-init.sh on the sample documents, split over the three silos."""
    documents = sorted((REPO / "silo_node" / "sample_data").iterdir())
    pairs = []
    for i, name in enumerate(("silo-a", "silo-b", "silo-c")):
        docs = tmp_path / "documents" / name
        docs.mkdir(parents=True)
        for path in documents[i::3]:
            shutil.copy(path, docs)
        pairs.append(f"{name}={docs}")
    home = tmp_path / "fedrag"
    done = subprocess.run(
        ["bash", str(REPO / "deploy" / "compose-init.sh"), str(home), *pairs],
        capture_output=True,
        text=True,
        env=engine.env,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (home / "api-key").write_text(done.stdout.strip().splitlines()[-1])
    return home


@pytest.fixture
def compose_up(engine: Engine, federation_home: Path) -> Iterator[tuple[str, str, str]]:
    port = free_port()
    project = f"fedrag-test-{uuid.uuid4().hex[:8]}"
    env = {**engine.env, "FEDRAG_HOME": str(federation_home), "GATEWAY_PORT": str(port)}
    up = [*COMPOSE, "-p", project, "up", "-d", "--no-build"]
    try:
        done = subprocess.run(up, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        # podman-compose names a service's container <project>_<service>_1.
        yield f"http://127.0.0.1:{port}", (federation_home / "api-key").read_text(), f"{project}_gateway_1"
    finally:
        subprocess.run([*COMPOSE, "-p", project, "down", "-t", "5"], capture_output=True, env=env, timeout=300)


def test_compose_runs_a_federation_that_answers_from_its_silos(
    engine: Engine, compose_up: tuple[str, str, str]
) -> None:
    url, api_key, gateway = compose_up
    engine.wait_ready(f"{url}/readyz", container=gateway, timeout_s=300)
    with httpx.Client(base_url=url, timeout=180, headers={"Authorization": f"Bearer {api_key}"}) as client:
        silos = client.get("/v1/silos")
        assert silos.status_code == 200, silos.text
        reply = client.post("/v1/ask", json={"question": "What is the first-line treatment for hypertension?"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["retrieved"], body
    assert {c["silo"] for c in body["citations"]} & {"silo-a", "silo-b", "silo-c"}, body["citations"]
