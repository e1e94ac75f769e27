"""A silo served by `fedrag silo serve` as its own process, searched over loopback (plain and TLS)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from federation.client import SiloClient
from silo_node.demo import running_silo
from tests.conftest import Federation, free_port
from tests.tls import self_signed_cert

pytestmark = pytest.mark.integration
FEDRAG = [sys.executable, "-m", "federation"]


def serving(silo_dir: Path, *extra: str, scheme: str = "http", verify: bool | ssl.SSLContext = True):
    return running_silo(silo_dir, free_port(), *extra, scheme=scheme, verify=verify)


def test_operator_searches_a_running_silo_with_the_cli(federation: Federation) -> None:
    with serving(federation.silo_dir()) as url:
        result = subprocess.run(
            [
                *FEDRAG,
                "silo",
                "search",
                url,
                "what triggers a migraine headache",
                "--silo",
                "alpha",
                "--federation",
                str(federation.file),
                "--key",
                str(federation.root / "keys/gateway/private.pem"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert result.returncode == 0, result.stderr
        assert '"silo": "alpha"' in result.stdout and "migraine" in result.stdout.lower()
        outsider = subprocess.run(
            [
                *FEDRAG,
                "silo",
                "search",
                url,
                "migraine",
                "--silo",
                "alpha",
                "--federation",
                str(federation.file),
                "--key",
                str(federation.root / "keys/outsider/private.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert outsider.returncode == 1
        assert "not a member" in outsider.stderr and "Traceback" not in outsider.stderr


async def test_tls_serving_and_a_signed_search_over_it(federation: Federation, encoder, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    with serving(
        federation.silo_dir(),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        scheme="https",
        verify=ssl.create_default_context(cafile=str(cert)),
    ) as url:
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as untrusting:
                await untrusting.get(f"{url}/healthz")  # an unknown certificate is not trusted
        async with SiloClient(url, "alpha", federation.signer(), verify=str(cert)) as client:
            reply = await client.search(
                encoder.encode(["influenza vaccine"])[0], 2, federation.membership.embedding.fingerprint
            )
        assert "influenza" in reply.hits[0].doc_id.lower()


async def test_cli_delete_while_serving_takes_effect_at_once(federation: Federation, encoder) -> None:
    vector = encoder.encode(["kidney stones passing with pain"])[0]
    fingerprint = federation.membership.embedding.fingerprint
    with serving(federation.silo_dir()) as url:
        async with SiloClient(url, "alpha", federation.signer()) as client:
            before = await client.search(vector, 3, fingerprint)
            target = before.hits[0].doc_id
            assert "kidney" in target
            deleted = subprocess.run(  # noqa: ASYNC221
                [*FEDRAG, "silo", "delete", str(federation.silo_dir()), target],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            assert deleted.returncode == 0, deleted.stderr
            after = await client.search(vector, 10, fingerprint)
            assert target not in {h.doc_id for h in after.hits}
