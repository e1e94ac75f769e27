"""The ``fedrag`` command: keys and membership here; each part adds its own commands.

Parts register a typer app under the ``fedrag.cli`` entry-point group (``silo`` from
``silo_node.cli``, later ``gateway``), so this module imports no other part and an
image without a part simply lacks its commands.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from federation.errors import FedragError
from federation.identity import Identity, load_public_key
from federation.membership import EmbeddingSpec, GatewayEntry, Membership, SiloEntry, load_membership, save_membership

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="fedrag",
    help="fedrag-serve: federated retrieval-augmented generation over private silos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Ed25519 identities for silos and gateways.", no_args_is_help=True)
federation_app = typer.Typer(help="The membership file (federation.toml) every party shares.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(federation_app, name="federation")


@keys_app.command("new")
def keys_new(
    directory: Annotated[Path, typer.Argument(help="Directory to write private.pem (mode 0600) and public.pem into.")],
) -> None:
    """Create a key pair and print its key id. Never overwrites an existing key."""
    identity = Identity.generate()
    private_path, public_path = identity.save(directory)
    console.print(f"wrote {private_path} (keep it secret) and {public_path}")
    typer.echo(identity.key_id)


@federation_app.command("init")
def federation_init(
    file: Annotated[Path, typer.Argument(help="Membership file to create, e.g. federation.toml.")],
    name: Annotated[str, typer.Option(help="Federation name.")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    encoder_backend: Annotated[
        str,
        typer.Option(
            help="What runs the embedding model at every party: torch; openvino (float32, 1.3-1.5x faster on "
            "CPU, the same vectors to 1e-5); or openvino-bf16 (bfloat16 on CPUs with AMX or AVX-512 BF16, 3.5-4x "
            "faster, cosine 0.9999 to torch's vectors). Part of the fingerprint: all parties run the one named here."
        ),
    ] = "torch",
) -> None:
    """Create a membership file with the default embedding model's id, dimension and fingerprint."""
    from federation.encoder import make_encoder

    if file.exists() and not force:
        raise FedragError(f"{file} exists; use --force to overwrite")
    encoder = make_encoder(encoder_backend)
    spec = encoder.spec()  # type: ignore[attr-defined]
    membership = Membership(name=name, embedding=spec)
    save_membership(file, membership)
    console.print(
        f"created federation '{name}' in {file} (embedding {encoder.model_id} run by {spec.backend}, "
        f"dim {encoder.dimension})"
    )


@federation_app.command("add-silo")
def federation_add_silo(
    file: Annotated[Path, typer.Argument(help="Membership file.")],
    name: Annotated[str, typer.Option(help="Silo name (letters, digits, . _ -).")],
    url: Annotated[str, typer.Option(help="Base URL where gateways reach the silo, e.g. https://silo.example:8443.")],
    public_key: Annotated[Path, typer.Option(help="The silo's public.pem.")],
    description: Annotated[str, typer.Option(help="What the silo holds (shown to routers).")] = "",
) -> None:
    """Add a silo (or replace the silo of that name)."""
    membership = load_membership(file)
    entry = SiloEntry(name=name, url=url, public_key=load_public_key(public_key).b64, description=description)
    save_membership(file, membership.with_silo(entry))
    console.print(f"silo '{name}' ({entry.key_id}) at {url} is in federation '{membership.name}'")


@federation_app.command("add-gateway")
def federation_add_gateway(
    file: Annotated[Path, typer.Argument(help="Membership file.")],
    name: Annotated[str, typer.Option(help="Gateway name.")],
    public_key: Annotated[Path, typer.Option(help="The gateway's public.pem.")],
) -> None:
    """Allow a gateway to search the silos (or replace the gateway of that name)."""
    membership = load_membership(file)
    entry = GatewayEntry(name=name, public_key=load_public_key(public_key).b64)
    save_membership(file, membership.with_gateway(entry))
    console.print(f"gateway '{name}' ({entry.key_id}) is in federation '{membership.name}'")


@federation_app.command("show")
def federation_show(
    file: Annotated[Path, typer.Argument(help="Membership file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show the federation: embedding contract, silos and gateways with their key ids."""
    membership = load_membership(file)
    if as_json:
        data = membership.model_dump(mode="json")
        for party in (*data["silos"], *data["gateways"]):
            party["key_id"] = _key_id(party["public_key"])
        typer.echo(json.dumps(data, indent=2))
        return
    spec: EmbeddingSpec = membership.embedding
    console.print(f"[bold]federation[/] {membership.name}")
    console.print(f"embedding {spec.model}, dimension {spec.dimension}, fingerprint {spec.fingerprint}")
    silos = Table("silo", "url", "key id", "description", title="silos")
    for s in membership.silos:
        silos.add_row(s.name, s.url, s.key_id, s.description)
    console.print(silos)
    gateways = Table("gateway", "key id", title="gateways")
    for g in membership.gateways:
        gateways.add_row(g.name, g.key_id)
    console.print(gateways)


def _key_id(public_b64: str) -> str:
    from federation.identity import PublicIdentity

    return PublicIdentity.from_b64(public_b64).key_id


def _load_part_commands() -> None:
    for ep in sorted(entry_points(group="fedrag.cli"), key=lambda e: e.name):
        try:
            sub = ep.load()
        except ImportError as exc:  # a part whose extra is not installed
            logging.getLogger(__name__).debug("commands '%s' unavailable: %s", ep.name, exc)
            continue
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)
        else:  # a single command, e.g. ``fedrag ask``
            app.command(name=ep.name)(sub)


def main() -> None:
    """Entry point of the ``fedrag`` console script; errors print one clear line, exit 1 (2 for usage)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _load_part_commands()
    try:
        app(standalone_mode=False)
    except FedragError as exc:
        err_console.print(f"[red]error:[/] {escape(exc.detail)}")  # a detail is text, not markup
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
