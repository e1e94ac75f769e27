"""``fedrag silo demo``: a one-silo federation from packaged text, searched with a signed request.

Builds (once) in a working directory: a silo key and a gateway key, a membership file, a
silo with the packaged medical sample documents; then starts the silo as its own process
on loopback, searches it as the gateway would, shows that an unsigned request is refused,
and stops the silo. A second run reuses what the first built.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from federation.client import SiloClient
from federation.config import load_silo_settings
from federation.encoder import Encoder, SentenceTransformerEncoder
from federation.identity import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, Identity, load_public_key
from federation.membership import EmbeddingSpec, GatewayEntry, Membership, SiloEntry, load_membership, save_membership
from federation.services import fedrag_service, free_port
from federation.signing import RequestSigner

SILO_NAME = "clinic-notes"
GATEWAY_NAME = "demo-gateway"
QUESTIONS = (
    "What are the warning signs of a stroke?",
    "How is type 2 diabetes treated?",
    "What was Jane Doe advised at her blood pressure review?",
)


def build(workdir: Path, encoder: Encoder, console: Console) -> tuple[Path, Path]:
    """Create keys, membership file and silo (each step only if missing); return (federation file, silo dir)."""
    from silo_node.ingest import iter_documents, sample_data_dir
    from silo_node.service import SiloService

    workdir.mkdir(parents=True, exist_ok=True)
    fed_file = workdir / "federation.toml"
    silo_dir = workdir / "silos" / SILO_NAME
    for party in (SILO_NAME, GATEWAY_NAME):
        if not (workdir / "keys" / party / PRIVATE_KEY_FILE).exists():
            Identity.generate().save(workdir / "keys" / party)
    if not fed_file.exists():
        save_membership(fed_file, Membership(name="demo", embedding=encoder_spec(encoder)))
    membership = load_membership(fed_file)
    if not any(s.name == SILO_NAME for s in membership.silos):
        membership = membership.with_silo(
            SiloEntry(
                name=SILO_NAME,
                url="http://127.0.0.1:8101",
                public_key=load_public_key(workdir / "keys" / SILO_NAME / PUBLIC_KEY_FILE).b64,
                description="Clinical fact sheets and a patient note (packaged sample text)",
            )
        )
    if not any(g.name == GATEWAY_NAME for g in membership.gateways):
        membership = membership.with_gateway(
            GatewayEntry(
                name=GATEWAY_NAME, public_key=load_public_key(workdir / "keys" / GATEWAY_NAME / PUBLIC_KEY_FILE).b64
            )
        )
    save_membership(fed_file, membership)
    if not (silo_dir / "silo.toml").exists():
        _cli(
            [
                "silo",
                "init",
                str(silo_dir),
                "--federation",
                str(fed_file),
                "--key",
                str(workdir / "keys" / SILO_NAME / PRIVATE_KEY_FILE),
                "--name",
                SILO_NAME,
            ]
        )
    service = SiloService(load_silo_settings(silo_dir), silo_dir, encoder=encoder).open()
    try:
        with console.status("ingesting the packaged sample documents"):
            report = service.ingest(iter_documents([sample_data_dir()], max_file_bytes=10_000_000))
    finally:
        service.close()
    console.print(
        f"silo '{SILO_NAME}': {report.added} documents added, {report.unchanged} unchanged, {report.chunks} new chunks"
    )
    return fed_file, silo_dir


def encoder_spec(encoder: Encoder) -> EmbeddingSpec:
    """The membership file's embedding section for ``encoder``."""
    return EmbeddingSpec(model=encoder.model_id, dimension=encoder.dimension, fingerprint=encoder.fingerprint)


def _cli(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "federation", *args], check=True, stdout=subprocess.DEVNULL)  # noqa: S603


@contextlib.contextmanager
def running_silo(
    silo_dir: Path,
    port: int,
    *serve_args: str,
    timeout_s: float = 60.0,
    scheme: str = "http",
    verify: bool | ssl.SSLContext = True,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Start ``fedrag silo serve`` as a child process; yield its URL once ready; stop it after.

    Args:
        silo_dir: the silo directory to serve.
        port: loopback port to listen on.
        serve_args: extra ``fedrag silo serve`` options (e.g. TLS files).
        timeout_s: how long to wait for ``/readyz``.
        scheme: ``https`` when ``serve_args`` turn TLS on.
        verify: TLS verification for the readiness probe.
        env: extra environment variables (``FEDRAG_SILO_*`` settings overrides).
    """
    url = f"{scheme}://127.0.0.1:{port}"
    args = ["silo", "serve", str(silo_dir), "--port", str(port), "--log-level", "warning", *serve_args]
    with fedrag_service(args, f"{url}/readyz", timeout_s=timeout_s, verify=verify, what="silo", env=env):
        yield url


def run_demo(workdir: Path, console: Console | None = None) -> None:
    """Build (or reuse) the demo silo, serve it, search it with signed requests, print the results."""
    console = console or Console()
    workdir = Path(workdir)
    encoder = SentenceTransformerEncoder()
    fed_file, silo_dir = build(workdir, encoder, console)
    membership = load_membership(fed_file)
    signer = RequestSigner(Identity.load(workdir / "keys" / GATEWAY_NAME / PRIVATE_KEY_FILE))
    port = free_port()
    with running_silo(silo_dir, port) as url:
        console.print(f"silo '{SILO_NAME}' serving on {url}")

        async def ask_all() -> None:
            async with SiloClient(url, SILO_NAME, signer, timeout=10.0) as client:
                for question in QUESTIONS:
                    vector = encoder.encode([question])[0]
                    reply = await client.search(vector, 3, membership.embedding.fingerprint)
                    table = Table("#", "score", "document", "passage", title=f"Q: {question}", title_justify="left")
                    for rank, hit in enumerate(reply.hits, 1):
                        table.add_row(
                            str(rank), f"{hit.score:.3f}", hit.doc_id, (hit.text or "")[:220].replace("\n", " ")
                        )
                    console.print(table)
                    console.print(
                        f"signed search by '{GATEWAY_NAME}' ({signer.key_id}): {len(reply.hits)} passages, "
                        f"{reply.redactions} PII redactions, {reply.took_ms:.1f} ms in the silo"
                    )

        asyncio.run(ask_all())
        unsigned = httpx.post(f"{url}/v1/search", json={"k": 3}, timeout=5.0)
        console.print(f"unsigned request refused: HTTP {unsigned.status_code} {unsigned.json()['code']}")
