"""``fedrag silo …``: the commands a silo operator runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from federation.config import (
    IndexSettings,
    SearchSettings,
    SiloSettings,
    describe_validation_error,
    load_silo_settings,
    write_silo_settings,
)
from federation.errors import ConfigError
from federation.identity import Identity
from federation.membership import load_membership
from federation.progress import progress
from federation.secrets import Secret

console = Console()
app = typer.Typer(help="Run and manage a silo node (a data owner's private index).", no_args_is_help=True)

OPERATOR_TOKEN_FILE = "operator.token"  # noqa: S105 (a file name, not a secret)


def _relative(path: Path, base: Path) -> Path:
    path, base = path.resolve(), base.resolve()
    try:
        return Path(os.path.relpath(path, base))
    except ValueError:
        return path


@app.command("init")
def init(
    directory: Annotated[
        Path, typer.Argument(help="Silo directory to create (holds config, store, index, audit log).")
    ],
    federation: Annotated[Path, typer.Option(help="The federation's membership file.")],
    key: Annotated[Path, typer.Option(help="The silo's private.pem (from 'fedrag keys new').")],
    name: Annotated[str, typer.Option(help="Silo name, as listed in the membership file.")],
    description: Annotated[str, typer.Option(help="What the silo holds (published on its card).")] = "",
    backend: Annotated[str, typer.Option(help="Index backend: faiss, hnswlib or exact.")] = "faiss",
    search: Annotated[
        str,
        typer.Option(
            help="How questions are ranked: dense (embeddings), lexical (BM25 over the words) or hybrid "
            "(both, fused); lexical and hybrid receive the question's text from gateways."
        ),
    ] = "dense",
) -> None:
    """Create a silo directory: writes silo.toml and a fresh operator token (printed once, saved 0600)."""
    if (directory / "silo.toml").exists():
        raise ConfigError(f"{directory} is already a silo; edit {directory / 'silo.toml'} to change it")
    membership = load_membership(federation)
    identity = Identity.load(key)
    listed = next((s for s in membership.silos if s.name == name), None)
    if listed is not None and listed.key_id != identity.key_id:
        raise ConfigError(f"federation lists silo '{name}' with key {listed.key_id}, but {key} is {identity.key_id}")
    token = secrets.token_urlsafe(32)
    try:
        settings = SiloSettings(
            name=name,
            description=description or (listed.description if listed else ""),
            federation_file=_relative(federation, directory),
            key_file=_relative(key, directory),
            operator_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
            index=IndexSettings(backend=backend),
            search=SearchSettings(mode=search),
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid silo settings: {describe_validation_error(exc)}") from exc
    directory.mkdir(parents=True, exist_ok=True)
    write_silo_settings(directory, settings)
    fd = os.open(directory / OPERATOR_TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    console.print(f"silo '{name}' created in {directory} (key {identity.key_id})")
    if listed is None:
        console.print(
            f"[yellow]note:[/] '{name}' is not in {federation} yet: ask the federation to run "
            f"'fedrag federation add-silo' with this silo's public key and URL"
        )
    console.print(f"operator token saved to {directory / OPERATOR_TOKEN_FILE} (mode 0600)")


def _open_service(directory: Path) -> Any:
    from silo_node.service import SiloService

    return SiloService(load_silo_settings(directory), directory).open()


def _corpus_spec(spec: str) -> tuple[str, int | None]:
    """Split ``NAME[:LIMIT]`` (``mondo:2000``) into a known corpus name and its document limit."""
    from silo_node.corpora import CORPORA

    name, sep, limit = spec.partition(":")
    if name not in CORPORA:
        raise ConfigError(f"--corpus '{spec}': unknown corpus '{name}'; choose one of: {', '.join(CORPORA)}")
    if sep and (not (limit.isascii() and limit.isdigit()) or int(limit) < 1):
        raise ConfigError(f"--corpus '{spec}': the limit after ':' must be a whole number of documents, at least 1")
    return name, int(limit) if sep else None


def _with_corpora(items: list[Any], specs: list[tuple[str, int | None]], include: Sequence[str] = ()) -> list[Any]:
    """Append the packaged corpora of ``specs`` (samples and the ``include`` ids); an id already read is a problem.

    Raises:
        ConfigError: an ``include`` id is in none of the corpora.
    """
    from silo_node.corpora import load_corpus
    from silo_node.ingest import IngestProblem

    seen = {item.doc_id for item in items if not isinstance(item, IngestProblem)}
    missing = set(include)
    for name, limit in specs:
        sample = load_corpus(name, limit=limit)
        sampled = {d.doc_id for d in sample}
        extra = [d for d in load_corpus(name) if d.doc_id in missing - sampled] if missing - sampled else []
        for document in [*sample, *extra]:
            missing.discard(document.doc_id)
            if document.doc_id in seen:
                items.append(IngestProblem(f"corpus {name}", f"duplicate document id {document.doc_id!r}"))
                continue
            seen.add(document.doc_id)
            items.append(document)
    if missing:
        names = ", ".join(name for name, _ in specs) or "(no --corpus given)"
        raise ConfigError(f"--include: no document {', '.join(sorted(missing))} in the corpora {names}")
    return items


@app.command("ingest")
def ingest(
    directory: Annotated[Path, typer.Argument(help="Silo directory.")],
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or directories (.txt .md .rst .html .jsonl .obo), recursively."),
    ] = None,
    corpus: Annotated[
        list[str] | None,
        typer.Option(
            "--corpus",
            metavar="NAME[:LIMIT]",
            help="A packaged corpus (see 'fedrag silo corpora'), e.g. mondo:2000 for an even sample of "
            "2000 documents. Repeatable.",
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            metavar="ID",
            help="A document of the --corpus corpora to ingest even when the sample leaves it out, "
            "e.g. MONDO:0005045. Repeatable.",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print each document id once it is durable.")
    ] = False,
) -> None:
    """Chunk, embed and index documents. Unchanged documents are skipped; changed ones replaced."""
    from silo_node.ingest import iter_documents

    if not paths and not corpus:
        raise ConfigError("nothing to ingest: give files or directories, or --corpus NAME (see 'fedrag silo corpora')")
    specs = [_corpus_spec(spec) for spec in corpus or []]
    service = _open_service(directory)
    try:
        items = list(iter_documents(paths or [], max_file_bytes=service.settings.chunking.max_file_bytes))
        items = _with_corpora(items, specs, include or [])
        with progress(
            console,
            TextColumn("embedding"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("documents"),
            TimeRemainingColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task("embedding documents", total=sum(1 for i in items if hasattr(i, "doc_id")))

            def ack(doc_id: str) -> None:
                bar.advance(task)
                if verbose:
                    console.print(f"stored {doc_id}", highlight=False)

            report = service.ingest(items, on_ack=ack)
    finally:
        service.close()
    console.print(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged} documents; "
        f"{report.chunks} chunks in {report.seconds:.1f}s"
    )
    for problem in report.problems:
        console.print(f"[yellow]skipped[/] {problem.source}: {problem.reason}", highlight=False)


@app.command("corpora")
def corpora() -> None:
    """List the packaged corpora 'ingest --corpus' can load, and whether each is installed."""
    from silo_node.corpora import CORPORA, corpus_status

    with console.status("counting documents"):
        status = corpus_status()
    table = Table("name", "domain", "status", "description", title="packaged corpora")
    for name, entry in CORPORA.items():
        state = status[name]
        table.add_row(
            name,
            entry.domain,
            escape(state) if state.startswith("ok") else f"[yellow]{escape(state)}[/]",
            entry.description,
        )
    console.print(table)


@app.command("delete")
def delete(
    directory: Annotated[Path, typer.Argument(help="Silo directory.")],
    doc_id: Annotated[str, typer.Argument(help="Document id (see 'fedrag silo stats' / the operator API).")],
) -> None:
    """Delete a document: a running node stops returning it at once; its text is erased from disk."""
    service = _open_service(directory)
    try:
        removed = service.delete(doc_id)
    finally:
        service.close()
    console.print(f"deleted {doc_id} ({removed} chunks)")


@app.command("serve")
def serve(
    directory: Annotated[Path, typer.Argument(help="Silo directory.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8101,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) to serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="CA bundle: require client certificates signed by it (mutual TLS).")
    ] = None,
    state_url: Annotated[
        str | None,
        typer.Option(
            help="Redis URL (redis://HOST:PORT/DB, with a password redis://:PASSWORD@HOST:PORT/DB) holding "
            "the nonce replay cache, shared by every process serving this silo (default: state_url in silo.toml, "
            "or this process). A URL with a password is better given as FEDRAG_SILO_STATE_URL, which other users "
            "cannot read in the process list."
        ),
    ] = None,
    reuse_port: Annotated[
        bool,
        typer.Option(
            help="Let several processes serving this silo listen on --port (SO_REUSEPORT; give them one state URL).",
            show_default=False,
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the silo's API (signed search and card, operator routes, health, metrics)."""
    import ssl

    from federation.http import serve as serve_app
    from silo_node.app import create_app

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if tls_client_ca is not None and tls_cert is None:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    settings = load_silo_settings(directory)
    if state_url is not None:
        try:
            settings.state_url = Secret(state_url)
        except ValidationError as exc:
            raise ConfigError(f"--state-url: {describe_validation_error(exc)}") from exc
    serve_app(
        create_app(directory, settings),
        host=host,
        port=port,
        reuse_port=reuse_port,
        log_level=log_level,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        ssl_ca_certs=str(tls_client_ca) if tls_client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if tls_client_ca else ssl.CERT_NONE,
    )


@app.command("train-node")
def train_node(
    directory: Annotated[Path, typer.Argument(help="Silo directory (its policy.training must allow training).")],
    superlink: Annotated[str, typer.Option(help="The federation's Flower SuperLink, HOST:PORT.")],
    root_certificates: Annotated[
        Path | None, typer.Option(help="CA certificate of the SuperLink's TLS (PEM); required unless --insecure.")
    ] = None,
    auth_key: Annotated[
        Path | None,
        typer.Option(help="SuperNode private key (OpenSSH EC); its public key must be registered with the SuperLink."),
    ] = None,
    insecure: Annotated[bool, typer.Option(help="Connect without TLS (loopback tests only).")] = False,
    port: Annotated[int, typer.Option(help="Local port of the SuperNode's runtime API (for its ClientApps).")] = 9094,
    model_dir: Annotated[
        Path | None, typer.Option(help="The base model as a transformers directory (default: converted and cached).")
    ] = None,
) -> None:
    """Take part in federated training: run a Flower SuperNode for this silo until stopped.

    The SuperNode runs fedrag's ClientApp on this silo's own documents; only adapter or
    prompt updates leave. The silo's policy (policy.training in silo.toml) decides whether
    it takes part, whether record-level DP-SGD is required, and its epsilon limit.
    """
    import subprocess

    if root_certificates is None and not insecure:
        raise ConfigError("give --root-certificates CA.pem (the SuperLink's TLS), or --insecure for loopback tests")
    from silo_node.training_node import supernode_command

    command = supernode_command(
        directory, superlink, root_certificates=root_certificates, auth_key=auth_key, port=port, model_dir=model_dir
    )
    console.print(f"training node for silo {directory}: {' '.join(command)}")
    env = dict(os.environ)
    env["PATH"] = f"{Path(command[0]).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        raise typer.Exit(subprocess.call(command, env=env))  # noqa: S603 - our own arguments
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command("card")
def card(directory: Annotated[Path, typer.Argument(help="Silo directory.")]) -> None:
    """Print the card this silo publishes (JSON): what gateways learn about it for routing."""
    service = _open_service(directory)
    try:
        typer.echo(service.card().model_dump_json(indent=2))
    finally:
        service.close()


@app.command("stats")
def stats(directory: Annotated[Path, typer.Argument(help="Silo directory.")]) -> None:
    """Print document and chunk counts, index kind and sizes."""
    service = _open_service(directory)
    try:
        typer.echo(json.dumps(service.stats(), indent=2))
    finally:
        service.close()


@app.command("search")
def search(
    url: Annotated[str, typer.Argument(help="The silo's base URL, e.g. http://127.0.0.1:8101.")],
    text: Annotated[str, typer.Argument(help="The question to search for.")],
    federation: Annotated[Path, typer.Option(help="The membership file.")],
    key: Annotated[Path, typer.Option(help="A gateway's private.pem listed in the federation.")],
    silo: Annotated[str | None, typer.Option(help="Silo name (default: the silo whose URL matches).")] = None,
    k: Annotated[int, typer.Option("-k", help="Passages wanted.")] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the silo.")] = 10.0,
    ca: Annotated[Path | None, typer.Option(help="CA bundle to verify the silo's TLS certificate.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON reply.")] = False,
) -> None:
    """Search a silo as a gateway would (signed): what an operator runs to check a node."""
    from federation.client import SiloClient
    from federation.encoder import encoder_for
    from federation.signing import RequestSigner

    membership = load_membership(federation)
    if silo is None:
        matches = [s.name for s in membership.silos if s.url.rstrip("/") == url.rstrip("/")]
        if len(matches) != 1:
            raise ConfigError(f"no silo in {federation} has URL {url}; name it with --silo")
        silo = matches[0]
    encoder = encoder_for(membership.embedding)
    vector = encoder.encode([text])[0]

    async def run() -> Any:
        client = SiloClient(
            url, silo, RequestSigner(Identity.load(key)), timeout=timeout, verify=str(ca) if ca else True
        )
        async with client:
            card = await client.card()  # the text goes only to a silo that searches with it, as from a gateway
            wanted = text if card.search != "dense" else None
            return await client.search(vector, k, membership.embedding.fingerprint, text=wanted)

    reply = asyncio.run(run())
    if as_json:
        typer.echo(reply.model_dump_json(indent=2))
        return
    table = Table(
        "#",
        "score",
        "doc",
        "passage",
        title=f"{reply.silo}: {len(reply.hits)} passages in {reply.took_ms:.1f} ms ({reply.search} search)",
    )
    for rank, hit in enumerate(reply.hits, 1):
        passage = (hit.text or "(text withheld by policy)").replace("\n", " ")
        table.add_row(str(rank), f"{hit.score:.3f}", hit.doc_id, passage[:160])
    console.print(table)
    if reply.redactions:
        console.print(f"{reply.redactions} PII matches redacted by the silo's policy")


@app.command("demo")
def demo(
    workdir: Annotated[Path, typer.Argument(help="Working directory for keys, membership file and silo.")] = Path(
        "demo-work"
    ),
) -> None:
    """Build a one-silo federation from packaged text, serve it, and run signed searches against it."""
    from silo_node.demo import run_demo

    run_demo(workdir, console)
