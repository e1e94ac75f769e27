"""Two processes serving one silo share its nonce replay cache through Redis; Redis down is a 503."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import httpx
import pytest

from federation.config import load_silo_settings, write_silo_settings
from federation.protocol import Matrix, SearchRequest
from federation.secrets import Secret
from federation.services import fedrag_service, free_port
from tests.conftest import Federation, RedisServer

pytestmark = pytest.mark.integration


def search(url: str, body: bytes, signature: dict[str, str]) -> httpx.Response:
    headers = {**signature, "Content-Type": "application/json"}
    return httpx.post(f"{url}/v1/search", content=body, headers=headers, timeout=30)


def test_a_nonce_replayed_to_a_second_silo_worker_is_refused(
    federation: Federation, encoder, redis_server: RedisServer, tmp_path: Path
) -> None:
    # A replica of silo alpha: the same identity and documents in its own directory (its own audit log).
    replica = federation.silo_dir("alpha-replica")
    shutil.copytree(federation.silo_dir("alpha"), replica)
    settings = load_silo_settings(replica)
    settings.state_url = Secret(redis_server.url)  # the replica from silo.toml, the first from --state-url
    write_silo_settings(replica, settings)
    ports = free_port(), free_port()
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    logs = [tmp_path / "silo-1.log", tmp_path / "silo-2.log"]
    commands = [
        ["silo", "serve", str(federation.silo_dir("alpha")), "--port", str(ports[0]), "--state-url", redis_server.url],
        ["silo", "serve", str(replica), "--port", str(ports[1])],
    ]
    body = (
        SearchRequest(
            vector=Matrix.from_numpy(encoder.encode(["how is influenza prevented"])),
            k=2,
            fingerprint=federation.membership.embedding.fingerprint,
        )
        .model_dump_json()
        .encode()
    )
    signer = federation.signer()
    with contextlib.ExitStack() as stack:
        for command, url, log in zip(commands, urls, logs, strict=True):
            stack.enter_context(fedrag_service(command, f"{url}/readyz", log=log, what="silo"))
        signature = signer.sign("POST", "/v1/search", "", body, "alpha")
        assert search(urls[0], body, signature).status_code == 200
        replayed = search(urls[1], body, signature)
        assert replayed.status_code == 401 and replayed.json()["code"] == "nonce_replayed"
        assert search(urls[1], body, signer.sign("POST", "/v1/search", "", body, "alpha")).status_code == 200

        redis_server.kill()
        down = search(urls[0], body, signer.sign("POST", "/v1/search", "", body, "alpha"))
        assert down.status_code == 503 and down.headers["content-type"].startswith("application/problem+json")
        assert down.json()["code"] == "state_store_unavailable" and "refused" in down.json()["detail"]
        assert httpx.get(f"{urls[0]}/healthz", timeout=5).status_code == 200  # the silo itself is alive

        redis_server.start()  # back, with the nonces it had written (appendfsync always)
        assert search(urls[1], body, signature).json()["code"] == "nonce_replayed"
        assert search(urls[0], body, signer.sign("POST", "/v1/search", "", body, "alpha")).status_code == 200
    for log in logs:
        assert redis_server.password not in log.read_text()
    assert "state store redis://***@127.0.0.1" in logs[0].read_text()  # the operator is told why, not the password
