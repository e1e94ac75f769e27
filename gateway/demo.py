"""``fedrag demo``: a whole federation on one machine, from packaged data.

In a working directory it builds (once): keys, a membership file, five silos from
packaged corpora (diseases, phenotypes, anatomy, an encyclopedia, Python documentation)
with a sample of each and the documents its questions are about, an API key; then starts
every silo, the embedded LLM and the gateway as separate processes on loopback, asks a
medical and a code question, and prints reasoning, answer, checked claims, citations and
the routing trace. ``--serve`` keeps everything
running and prints the chat page's URL. Silos are built with the silo operator's own CLI
(``fedrag silo init`` / ``ingest``), so the demo exercises what operators run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

from federation.encoder import SentenceTransformerEncoder
from federation.errors import UpstreamError
from federation.identity import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, Identity, load_public_key
from federation.membership import GatewayEntry, Membership, SiloEntry, load_membership, save_membership
from federation.progress import progress
from federation.services import FEDRAG, fedrag_service, free_port

GATEWAY = "demo-gateway"
DEMO_ADAPTER = "demo-adapter"


@dataclass(frozen=True)
class DemoSilo:
    """One silo of the demo federation and the packaged corpora it holds.

    Attributes:
        name: the silo's name.
        corpora: the packaged corpora it ingests a sample of.
        description: what it holds (its card's description).
        featured: documents of those corpora ingested besides the sample: the ones the
            demo's questions are about, so that their answers can be grounded.
    """

    name: str
    corpora: tuple[str, ...]
    description: str
    featured: tuple[str, ...] = ()


SILOS = (
    DemoSilo("diseases", ("mondo",), "Disease definitions (MONDO ontology)", featured=("MONDO:0005045",)),
    DemoSilo("phenotypes", ("hpo",), "Clinical signs and symptoms (Human Phenotype Ontology)"),
    DemoSilo("anatomy", ("uberon", "cl"), "Anatomy and cell types (UBERON, Cell Ontology)"),
    DemoSilo("encyclopedia", ("wiki",), "Encyclopedia summaries of general-knowledge topics (Wikipedia)"),
    DemoSilo("python-docs", ("pydocs",), "Python standard library documentation", featured=("python:json.loads",)),
)
QUESTIONS = (
    "What is hypertrophic cardiomyopathy?",
    "How do I parse a JSON string into a Python dictionary?",
)


def _run(args: list[str], log: Path) -> None:
    with open(log, "ab") as sink:
        result = subprocess.run([*FEDRAG, *args], stdout=sink, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    if result.returncode != 0:
        raise UpstreamError(f"'fedrag {' '.join(args[:2])}' failed; see {log}")


def build(workdir: Path, per_corpus: int, console: Console) -> None:
    """Create keys, membership, silos and an API key (each only if missing)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "build.log"
    fed_file = workdir / "federation.toml"
    names = [s.name for s in SILOS] + [GATEWAY]
    for name in names:
        if not (workdir / "keys" / name / PRIVATE_KEY_FILE).exists():
            Identity.generate().save(workdir / "keys" / name)
    if not fed_file.exists():
        save_membership(fed_file, Membership(name="demo", embedding=SentenceTransformerEncoder().spec()))
    membership = load_membership(fed_file)
    for silo in SILOS:
        key = load_public_key(workdir / "keys" / silo.name / PUBLIC_KEY_FILE).b64
        membership = membership.with_silo(
            SiloEntry(name=silo.name, url="http://127.0.0.1:1", public_key=key, description=silo.description)
        )
    gateway_key = load_public_key(workdir / "keys" / GATEWAY / PUBLIC_KEY_FILE).b64
    save_membership(fed_file, membership.with_gateway(GatewayEntry(name=GATEWAY, public_key=gateway_key)))
    with progress(console) as bar:
        task = bar.add_task("building silos", total=len(SILOS))
        for silo in SILOS:
            silo_dir = workdir / "silos" / silo.name
            bar.update(task, description=f"silo {silo.name}: ingesting {per_corpus} documents per corpus")
            if not (silo_dir / "silo.toml").exists():
                _run(
                    [
                        "silo",
                        "init",
                        str(silo_dir),
                        "--federation",
                        str(fed_file),
                        "--key",
                        str(workdir / "keys" / silo.name / PRIVATE_KEY_FILE),
                        "--name",
                        silo.name,
                    ],
                    log,
                )
            corpus_args = [arg for c in silo.corpora for arg in ("--corpus", f"{c}:{per_corpus}")]
            corpus_args += [arg for doc_id in silo.featured for arg in ("--include", doc_id)]
            _run(["silo", "ingest", str(silo_dir), *corpus_args], log)
            bar.advance(task)
    if not (workdir / "api-key.txt").exists():
        result = subprocess.run(  # noqa: S603
            [*FEDRAG, "gateway", "keys", "add", str(workdir / "api-keys.json"), "demo-user"],
            capture_output=True,
            text=True,
            check=True,
        )
        fd = os.open(workdir / "api-key.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(result.stdout.strip().splitlines()[-1] + "\n")


@contextlib.contextmanager
def running_federation(
    workdir: Path,
    console: Console,
    *,
    llm_url: str | None = None,
    gateway_args: Sequence[str] = (),
    adapter: Path | None = None,
) -> Iterator[tuple[str, str]]:
    """Start silos, the embedded LLM and the gateway; yield (gateway URL, API key).

    Args:
        workdir: the built demo directory.
        console: where progress goes.
        llm_url: an LLM server to use instead of starting the embedded one.
        gateway_args: more ``fedrag gateway serve`` flags (later flags win).
        adapter: a llama.cpp LoRA adapter (GGUF, from ``fedrag train export``) the embedded LLM serves
            and the gateway answers with by default.

    Raises:
        ValueError: ``adapter`` with ``llm_url`` (only the embedded LLM is started with it).
    """
    if adapter is not None and llm_url is not None:
        raise ValueError("an adapter is served by the embedded LLM: give no llm_url with it")
    fed_file = workdir / "federation.toml"
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    ports = {silo.name: free_port() for silo in SILOS}
    membership = load_membership(fed_file)
    for entry in membership.silos:
        membership = membership.with_silo(entry.model_copy(update={"url": f"http://127.0.0.1:{ports[entry.name]}"}))
    save_membership(fed_file, membership)
    with contextlib.ExitStack() as stack:
        with console.status("starting silos, the embedded LLM and the gateway"):
            for silo in SILOS:
                url = f"http://127.0.0.1:{ports[silo.name]}"
                stack.enter_context(
                    fedrag_service(
                        ["silo", "serve", str(workdir / "silos" / silo.name), "--port", str(ports[silo.name])],
                        f"{url}/readyz",
                        log=logs / f"silo-{silo.name}.log",
                        what=f"silo {silo.name}",
                    )
                )
            gateway_port = free_port()
            if llm_url is None:
                llm_port = free_port()
                llm_url = f"http://127.0.0.1:{llm_port}"
                stack.enter_context(
                    fedrag_service(
                        ["llm", "serve", "--port", str(llm_port)]
                        + ([] if adapter is None else ["--lora", f"{DEMO_ADAPTER}={adapter.resolve()}"]),
                        f"{llm_url}/v1/models",
                        log=logs / "llm.log",
                        what="LLM server",
                    )
                )
            gateway_url = f"http://127.0.0.1:{gateway_port}"
            stack.enter_context(
                fedrag_service(
                    [
                        "gateway",
                        "serve",
                        "--federation",
                        str(fed_file),
                        "--key",
                        str(workdir / "keys" / GATEWAY / PRIVATE_KEY_FILE),
                        "--api-keys",
                        str(workdir / "api-keys.json"),
                        "--llm-url",
                        llm_url,
                        "--port",
                        str(gateway_port),
                        "--router",
                        "centroid",
                        "--max-silos",
                        "2",
                        "--deadline",
                        "5",
                        *([] if adapter is None else ["--adapter", DEMO_ADAPTER, "--lora-adapter", DEMO_ADAPTER]),
                        *gateway_args,
                    ],
                    f"{gateway_url}/readyz",
                    log=logs / "gateway.log",
                    what="gateway",
                )
            )
        console.print(
            f"federation running: {len(SILOS)} silos, LLM {llm_url}, gateway {gateway_url} (logs in {logs})",
            highlight=False,
        )
        if adapter is not None:
            console.print(
                f"answers come from the LoRA adapter {adapter} (model fedrag:{DEMO_ADAPTER})", highlight=False
            )
        yield gateway_url, (workdir / "api-key.txt").read_text().strip()


def run_demo(
    workdir: Path,
    *,
    per_corpus: int = 300,
    serve: bool = False,
    console: Console | None = None,
    adapter: Path | None = None,
) -> None:
    """Build (or reuse) the demo federation, run it, ask the sample questions (with ``adapter``: answered by it)."""
    from gateway.cli import print_answer

    console = console or Console()
    started = time.perf_counter()
    build(workdir, per_corpus, console)
    with running_federation(workdir, console, adapter=adapter) as (url, api_key):
        for question in QUESTIONS:
            console.rule(f"Q: {question}")
            response = httpx.post(
                f"{url}/v1/ask",
                json={"question": question},
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=600,
            )
            if response.status_code != 200:
                raise UpstreamError(f"gateway answered {response.status_code}: {response.text[:300]}")
            print_answer(response.json(), console)
        console.print(f"first answer path done in {time.perf_counter() - started:.0f} s", highlight=False)
        if serve:
            console.print(f"chat page: {url}/  (API key in {workdir / 'api-key.txt'}); Ctrl-C stops everything")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    (workdir / "last-run.json").write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
