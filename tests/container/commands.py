"""The README's container commands, as templates the container tests run.

The README shows each command as an operator types it on a Docker host (:data:`README_HOST`);
the tests run the very same templates with podman on loopback (``--network host``, free ports,
temporary directories). ``tests/container/test_readme_commands.py`` checks that every template,
rendered for the README host, appears in the README, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["GATEWAY", "README_HOST", "SILO", "ContainerHost", "readme_commands", "render"]


@dataclass(frozen=True)
class ContainerHost:
    """Where the commands run: the engine, the host paths mounted and how containers reach each other."""

    engine: str = "docker"
    silo_root: str = "/srv/fedrag"
    gateway_root: str = "/srv/fedrag-gateway"
    documents: str = "/data/guidelines"
    silo_name: str = "fedrag-silo"
    llm_name: str = "fedrag-llm"
    gateway_name: str = "fedrag-gateway"
    # The silo's and the gateway's published ports: `-p` on a Docker host, nothing with the host's network.
    silo_publish: str = "-p 8443:8443"
    gateway_publish: str = "-p 8000:8000"
    # The network the gateway and the LLM server share, and the LLM server's name on it.
    network: str = "--network fedrag"
    llm_host: str = "fedrag-llm"
    bind: str = "0.0.0.0"
    silo_port: int = 8443
    llm_port: int = 8080
    gateway_port: int = 8000


README_HOST = ContainerHost()
"""The values the README shows."""

SILO = {
    "keys": "{engine} run --rm --network none -v {silo_root}:/srv/fedrag fedrag-silo keys new /srv/fedrag/keys",
    "init": "{engine} run --rm --network none -v {silo_root}:/srv/fedrag fedrag-silo silo init /srv/fedrag/silo"
    " --federation /srv/fedrag/federation.toml --key /srv/fedrag/keys/private.pem --name clinic-a",
    "ingest": "{engine} run --rm --network none -v {silo_root}:/srv/fedrag -v {documents}:/data:ro fedrag-silo"
    " silo ingest /srv/fedrag/silo /data",
    "serve": "{engine} run -d --name {silo_name} {silo_publish} -v {silo_root}:/srv/fedrag"
    " -e FEDRAG_HEALTH_URL=https://127.0.0.1:{silo_port}/healthz fedrag-silo silo serve /srv/fedrag/silo"
    " --host {bind} --port {silo_port} --tls-cert /srv/fedrag/tls/cert.pem --tls-key /srv/fedrag/tls/key.pem",
    "stats": "{engine} exec {silo_name} fedrag silo stats /srv/fedrag/silo",
}
"""A silo operator's commands, in order: key pair, init, ingest, serve (TLS), stats of the running node."""

GATEWAY = {
    "llm": "{engine} run -d --name {llm_name} {network} fedrag-llm llm serve --host {bind} --port {llm_port}",
    "gateway": "{engine} run -d --name {gateway_name} {network} {gateway_publish} -v {gateway_root}:/srv/fedrag:ro"
    " fedrag-gateway gateway serve --host {bind} --port {gateway_port} --federation /srv/fedrag/federation.toml"
    " --key /srv/fedrag/keys/private.pem --api-keys /srv/fedrag/api-keys.json"
    " --llm-url http://{llm_host}:{llm_port} --silo-ca /srv/fedrag/tls/silo-ca.pem",
}
"""A gateway operator's commands: the embedded LLM server, then the gateway answering through the silos."""


def render(template: str, host: ContainerHost) -> list[str]:
    """The command ``template`` stands for on ``host``, split into arguments."""
    values = {name: getattr(host, name) for name in host.__dataclass_fields__}
    return shlex.split(template.format(**values))


def readme_commands(readme: Path) -> set[str]:
    """Every command in the README's shell code blocks, continuation lines joined, whitespace collapsed."""
    text = readme.read_text(encoding="utf-8")
    commands = set()
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                commands.add(" ".join(line.split()))
    return commands


def podman_host(engine: str, **paths_and_ports: object) -> ContainerHost:
    """The test's host: podman on this machine's loopback (no published ports, the host's network)."""
    return replace(
        README_HOST,
        engine=engine,
        silo_publish="--network host",
        gateway_publish="",
        network="--network host",
        llm_host="127.0.0.1",
        bind="127.0.0.1",
        **paths_and_ports,  # type: ignore[arg-type]
    )
