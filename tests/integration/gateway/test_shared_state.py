"""Two gateway processes on one port enforce one API key's rate limit together, through Redis; Redis down is a 503."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest

from federation.services import fedrag_service, free_port
from gateway.apikeys import ApiKeyStore
from tests.conftest import Federation, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("heavy")]  # two gateways, each with the encoder

LIMIT = 4


def served(log: Path) -> int:
    return log.read_text().count('"GET /v1/models HTTP/1.1"')


def wait_started(log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while "Application startup complete" not in log.read_text():
        assert time.monotonic() < deadline, f"the gateway did not start: {log.read_text()[-2000:]}"
        time.sleep(0.2)


def test_two_gateways_behind_one_port_share_a_keys_limit(
    federation: Federation, redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = tmp_path / "api-keys.json"
    key = ApiKeyStore.add(keys, "shared")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    common = [
        "gateway", "serve", "--federation", str(federation.file),
        "--key", str(federation.root / "keys/gateway/private.pem"), "--api-keys", str(keys),
        "--port", str(port), "--reuse-port", "--llm-url", f"http://127.0.0.1:{free_port()}",
        "--rate-limit", str(LIMIT), "--log-level", "info",
    ]  # fmt: skip
    logs = [tmp_path / "gateway-1.log", tmp_path / "gateway-2.log"]
    headers = {"Authorization": f"Bearer {key}"}
    with contextlib.ExitStack() as stack:
        # One is given the URL as a flag, the other in its settings file.
        stack.enter_context(
            fedrag_service([*common, "--state-url", redis_server.url], f"{url}/readyz", log=logs[0], what="gateway 1")
        )
        config = tmp_path / "gateway.toml"
        config.write_text(f'state_url = "{redis_server.url}"\n')
        second = [*common, "--config", str(config)]
        stack.enter_context(fedrag_service(second, f"{url}/readyz", log=logs[1], what="gateway 2"))
        wait_started(logs[1])  # the readiness probe above may have been answered by the first
        statuses: list[int] = []
        # A new connection each time: the kernel spreads them over both processes.
        while len(statuses) < 40 and (len(statuses) < 2 * LIMIT or not all(served(log) for log in logs)):
            reply = httpx.get(f"{url}/v1/models", headers=headers, timeout=30)
            statuses.append(reply.status_code)
            if reply.status_code == 429:
                assert reply.json()["code"] == "rate_limited" and int(reply.headers["Retry-After"]) >= 1
        assert all(served(log) for log in logs), "the kernel sent every connection to one process"
        assert statuses == [200] * LIMIT + [429] * (len(statuses) - LIMIT)

        redis_server.kill()
        for _ in range(4):  # whichever process answers
            down = httpx.get(f"{url}/v1/models", headers=headers, timeout=30)
            assert down.status_code == 503 and down.headers["content-type"].startswith("application/problem+json")
            assert down.json()["code"] == "state_store_unavailable"
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    for log in logs:
        assert redis_server.password not in log.read_text()
