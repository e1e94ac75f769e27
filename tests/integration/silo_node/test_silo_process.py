"""A silo served by `fedrag silo serve` as its own process, searched over loopback (plain and TLS)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from federation.client import SiloClient
from silo_node.demo import running_silo
from tests.conftest import Federation, free_port

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


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_tls_serving_and_a_signed_search_over_it(federation: Federation, encoder, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
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
