"""Shared fixtures: the real encoder, a small federation on disk, a silo with sample data, a Redis server."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from federation.client import SiloClient
from federation.config import SiloSettings, load_silo_settings, write_silo_settings
from federation.encoder import SentenceTransformerEncoder
from federation.identity import Identity
from federation.membership import GatewayEntry, Membership, SiloEntry, save_membership
from federation.services import free_port
from federation.signing import RequestSigner

if TYPE_CHECKING:
    from federation.redis_state import RedisState

OPERATOR_TOKEN = "test-operator-token-0123456789abcdef"
__all__ = ["OPERATOR_TOKEN", "Federation", "RedisServer", "free_port", "make_federation"]


@pytest.fixture(scope="session")
def encoder() -> SentenceTransformerEncoder:
    """The real all-MiniLM-L6-v2 encoder, loaded once per test session."""
    enc = SentenceTransformerEncoder()
    enc.encode(["warm up"])
    return enc


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The transformers copy of the embedded LLM's GGUF (converted once into the user's cache)."""
    pytest.importorskip("transformers")
    from training.base_model import hf_model_dir

    return hf_model_dir()


@dataclass
class Federation:
    """A federation on disk: two silos (alpha, beta), one gateway, one outsider key."""

    root: Path
    file: Path
    membership: Membership
    gateway: Identity
    silo_alpha: Identity
    silo_beta: Identity
    outsider: Identity

    def silo_dir(self, name: str = "alpha") -> Path:
        return self.root / "silos" / name

    def signer(self, identity: Identity | None = None) -> RequestSigner:
        return RequestSigner(identity or self.gateway)


def make_federation(root: Path, encoder: SentenceTransformerEncoder) -> Federation:
    root.mkdir(parents=True, exist_ok=True)
    ids = {name: Identity.generate() for name in ("gateway", "alpha", "beta", "outsider")}
    for name, identity in ids.items():
        identity.save(root / "keys" / name)
    membership = Membership(
        name="test-fed",
        embedding=encoder.spec(),
        silos=(
            SiloEntry(name="alpha", url="http://127.0.0.1:1", public_key=ids["alpha"].public.b64, description="alpha"),
            SiloEntry(name="beta", url="http://127.0.0.1:2", public_key=ids["beta"].public.b64, description="beta"),
        ),
        gateways=(GatewayEntry(name="gw", public_key=ids["gateway"].public.b64),),
    )
    fed_file = root / "federation.toml"
    save_membership(fed_file, membership)
    for silo in ("alpha", "beta"):
        silo_dir = root / "silos" / silo
        silo_dir.mkdir(parents=True)
        write_silo_settings(
            silo_dir,
            SiloSettings(
                name=silo,
                description=f"test silo {silo}",
                federation_file=Path("../../federation.toml"),
                key_file=Path(f"../../keys/{silo}/private.pem"),
                operator_token_sha256=hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest(),
            ),
        )
    return Federation(
        root=root,
        file=fed_file,
        membership=membership,
        gateway=ids["gateway"],
        silo_alpha=ids["alpha"],
        silo_beta=ids["beta"],
        outsider=ids["outsider"],
    )


@pytest.fixture(scope="session")
def _sample_federation(tmp_path_factory: pytest.TempPathFactory, encoder: SentenceTransformerEncoder) -> Federation:
    """A federation whose silo 'alpha' holds the packaged sample documents (built once)."""
    from silo_node.ingest import iter_documents, sample_data_dir
    from silo_node.service import SiloService

    fed = make_federation(tmp_path_factory.mktemp("fed-template"), encoder)
    service = SiloService(load_silo_settings(fed.silo_dir()), fed.silo_dir(), encoder=encoder).open()
    report = service.ingest(iter_documents([sample_data_dir()], max_file_bytes=10_000_000))
    assert report.documents > 5 and not report.problems
    service.close()
    return fed


@pytest.fixture
def federation(tmp_path: Path, _sample_federation: Federation) -> Federation:
    """A private copy of the sample federation for one test."""
    shutil.copytree(_sample_federation.root, tmp_path / "fed", symlinks=True)
    copy = Federation(
        **{**vars(_sample_federation), "root": tmp_path / "fed", "file": tmp_path / "fed" / "federation.toml"}
    )
    return copy


@pytest.fixture
async def silo_app(federation: Federation, encoder: SentenceTransformerEncoder) -> AsyncIterator[httpx.ASGITransport]:
    """The alpha silo's app, started (lifespan run), as an in-process transport."""
    from silo_node.app import create_app

    app = create_app(federation.silo_dir(), encoder=encoder)
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)


@pytest.fixture
async def alpha_client(federation: Federation, silo_app: httpx.ASGITransport) -> AsyncIterator[SiloClient]:
    """A gateway's signed client for silo alpha, in process."""
    async with SiloClient("http://alpha", "alpha", federation.signer(), transport=silo_app) as client:
        yield client


@dataclass
class RedisServer:
    """A redis-server on a loopback port, in a test's directory, with a password and durable writes."""

    port: int
    dir: Path
    password: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        # What the README tells operators to run (appendonly, fsync on every write), plus a password.
        return [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--requirepass", self.password,
        ]  # fmt: skip

    def start(self) -> None:
        import redis

        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            assert self.proc.poll() is None, f"redis-server exited: {(self.dir / 'redis.log').read_text()[-500:]}"
            assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
            time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        """Kill it as a crash would (SIGKILL): nothing is written on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server for one test (skipped when the Debian package redis-server is not installed)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; make install adds it as root)")
    server = RedisServer(port=free_port(), dir=tmp_path_factory.mktemp("redis"), password=secrets.token_hex(16))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_state(redis_server: RedisServer) -> Iterator[RedisState]:
    """A connection to :func:`redis_server` for the stores of federation 'test-fed'."""
    from federation.redis_state import RedisState
    from federation.secrets import Secret

    state = RedisState(Secret(redis_server.url), namespace="test-fed")
    yield state
    state.close()
