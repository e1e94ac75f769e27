"""The images as operators run them: the README's container commands, on podman (or Docker), on loopback.

Slow (``make test-slow``; ``make test-containers`` runs only these): the first run builds
the images (``deploy/images.sh``, about 5 minutes on 2 cores here), later runs reuse podman's
layer cache. A silo container is set up exactly as the operator guide says (key pair, init,
ingest, TLS serve, uid 10001, the directory a volume), searched signed from the host, killed
with SIGKILL after acknowledging documents and restarted; then a gateway container answers
through it and the embedded LLM container.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from federation.services import FEDRAG, free_port
from tests.container.commands import GATEWAY, SILO, ContainerHost, podman_host
from tests.container.engine import REPO, UID, Engine, chown_to_container_user
from tests.tls import self_signed_cert

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

QUESTION = "first-line treatment for hypertension"


@dataclass
class RunningSilo:
    host: ContainerHost
    url: str
    ca: ssl.SSLContext
    cert: Path
    coordinator: Path
    operator_token: str


def _fedrag(*args: str | Path) -> str:
    """The host's fedrag CLI: the coordinator's and a gateway operator's steps."""
    done = subprocess.run([*FEDRAG, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"fedrag {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def silo(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> RunningSilo:
    """A silo set up with the operator guide's container commands, its coordinator's steps on the host."""
    work = tmp_path_factory.mktemp("containers")
    root, coordinator = work / "silo", work / "coordinator"
    root.mkdir()
    chown_to_container_user(root)
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    host = podman_host(
        engine.command,
        silo_root=str(root),
        documents=str(REPO / "silo_node" / "sample_data"),
        silo_name=f"fedrag-silo-{tag}",
        silo_port=port,
    )
    engine.step(SILO["keys"], host)
    private = root / "keys" / "private.pem"
    assert private.stat().st_uid == UID and private.stat().st_mode & 0o077 == 0, "the key is the container user's only"

    # The coordinator (on the host): the membership file with this silo and a gateway.
    fed = coordinator / "federation.toml"
    _fedrag("keys", "new", coordinator / "gw")
    _fedrag("federation", "init", fed, "--name", "containers")
    _fedrag("federation", "add-gateway", fed, "--name", "gw-1", "--public-key", coordinator / "gw" / "public.pem")
    _fedrag(
        "federation", "add-silo", fed, "--name", "clinic-a", "--url", f"https://127.0.0.1:{port}",
        "--public-key", root / "keys" / "public.pem",
    )  # fmt: skip
    shutil.copy(fed, root / "federation.toml")
    (root / "tls").mkdir()
    cert, _ = self_signed_cert(root / "tls")
    chown_to_container_user(root)

    engine.step(SILO["init"], host)
    ingested = engine.step(SILO["ingest"], host, timeout=900)
    added = re.search(r"added (\d+)", ingested)
    assert added and int(added.group(1)) >= 13, f"every sample document is ingested: {ingested}"
    engine.step(SILO["serve"], host)
    ca = ssl.create_default_context(cafile=str(cert))
    engine.wait_ready(f"https://127.0.0.1:{port}/healthz", container=host.silo_name, verify=ca)
    token = (root / "silo" / "operator.token").read_text().strip()
    return RunningSilo(host, f"https://127.0.0.1:{port}", ca, cert, coordinator, token)


def _signed_search(silo: RunningSilo, question: str) -> list[dict[str, object]]:
    out = _fedrag(
        "silo", "search", silo.url, question, "--federation", silo.coordinator / "federation.toml",
        "--key", silo.coordinator / "gw" / "private.pem", "--silo", "clinic-a", "--ca", silo.cert, "--json",
    )  # fmt: skip
    return list(json.loads(out)["hits"])


def test_a_silo_container_serves_signed_searches_and_loses_nothing_acknowledged_when_killed(
    engine: Engine, silo: RunningSilo
) -> None:
    passages = _signed_search(silo, QUESTION)
    assert passages and "hypertension" in str(passages[0]["doc_id"]), passages[:1]
    with httpx.Client(verify=silo.ca, timeout=2) as client:
        unsigned = client.post(f"{silo.url}/v1/search", json={"vector": [0.0] * 384, "k": 1})
        assert unsigned.status_code == 401, f"search needs a gateway's signature: {unsigned.text}"
    stats = engine.step(SILO["stats"], silo.host)
    assert "chunks" in stats.lower(), stats

    # Documents acknowledged by the admin API, then SIGKILL with no warning, then a restart.
    auth = {"Authorization": f"Bearer {silo.operator_token}"}
    notes = [
        {"id": f"ward-note-{i}", "title": f"Ward note {i}", "text": f"Ward note {i}: patient {i} given zorblat {i} mg."}
        for i in range(25)
    ]
    with httpx.Client(verify=silo.ca, timeout=120, headers=auth) as client:
        for batch in (notes[:10], notes[10:]):
            reply = client.post(f"{silo.url}/v1/admin/documents", json={"documents": batch})
            assert reply.status_code == 200, reply.text
    engine.run([engine.command, "kill", silo.host.silo_name])
    engine.run([engine.command, "start", silo.host.silo_name])
    engine.wait_ready(f"{silo.url}/healthz", container=silo.host.silo_name, verify=silo.ca)
    with httpx.Client(verify=silo.ca, timeout=30, headers=auth) as client:
        listed = client.get(f"{silo.url}/v1/admin/documents", params={"limit": 1000}).json()
    ids = {doc["doc_id"] for doc in listed}
    assert {note["id"] for note in notes} <= ids, "an acknowledged document was lost"
    assert any(p["doc_id"] == "ward-note-24" for p in _signed_search(silo, "patient 24 given zorblat 24 mg"))


def test_a_gateway_container_answers_through_the_silo_container_and_the_llm_container(
    engine: Engine, silo: RunningSilo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("gateway")
    (root / "keys").mkdir()
    (root / "tls").mkdir()
    shutil.copy(silo.coordinator / "gw" / "private.pem", root / "keys" / "private.pem")
    shutil.copy(silo.coordinator / "federation.toml", root / "federation.toml")
    shutil.copy(silo.cert, root / "tls" / "silo-ca.pem")
    api_key = _fedrag("gateway", "keys", "add", root / "api-keys.json", "tester").strip().splitlines()[-1]
    chown_to_container_user(root)
    tag = uuid.uuid4().hex[:8]
    host = podman_host(
        engine.command,
        gateway_root=str(root),
        llm_name=f"fedrag-llm-{tag}",
        gateway_name=f"fedrag-gateway-{tag}",
        llm_port=free_port(),
        gateway_port=free_port(),
    )
    engine.step(GATEWAY["llm"], host)
    engine.wait_ready(f"http://127.0.0.1:{host.llm_port}/health", container=host.llm_name)
    engine.step(GATEWAY["gateway"], host)
    url = f"http://127.0.0.1:{host.gateway_port}"
    engine.wait_ready(f"{url}/readyz", container=host.gateway_name)

    with httpx.Client(base_url=url, timeout=180) as client:
        assert client.post("/v1/ask", json={"question": QUESTION}).status_code == 401
        reply = client.post(
            "/v1/ask", json={"question": f"What is the {QUESTION}?"}, headers={"Authorization": f"Bearer {api_key}"}
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["retrieved"] and body["answer"].strip(), body
    assert any(c["silo"] == "clinic-a" for c in body["citations"]), body["citations"]
