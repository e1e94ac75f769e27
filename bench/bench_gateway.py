"""Gateway benchmarks (issue 3), each a comparison measured side by side in one run.

1. Fan-out: latency of the gateway's concurrent fan-out (``SiloPool.search``) and of the
   whole retrieval (``Pipeline.retrieve``: embed, route, search, aggregate) with N silos vs
   1 silo, interleaved query by query. The silos are real ``fedrag silo serve`` processes on
   loopback, each a copy of one corpus silo (own key, own membership entry). Because N silo
   processes share this machine's cores with the gateway, the same comparison is also run
   against stub silos (one other process, bare asyncio, replies encoded once) that answer
   after a fixed delay using next to no CPU, which is what silos on their own machines look
   like to the gateway; a serial fan-out would be about N times slower there. The gateway
   process's CPU time per question and per extra silo call is reported too (it is what the
   concurrent fan-out cannot overlap), and so is the CPU the silo or stub processes spent
   per request (read from ``/proc``).
2. Deadline: the healthy silos plus one that answers after ``--slow-s`` seconds, with a
   ``--deadline-ms`` deadline; p50/p95/p99 of the fan-out and of ``Pipeline.retrieve`` vs
   the deadline, with the circuit breaker effectively disabled (every question waits for
   the deadline) and, for comparison, with the default breaker (3 failures).
3. Routing: measured by ``bench/bench_routing.py`` (same corpus federation).
4. LLM: time to first token streamed through the gateway's ``/v1/chat/completions`` vs the
   request body the gateway sent to the LLM, replayed straight to the embedded LLM server
   (``fedrag llm serve``) and to a stub LLM that streams at once (which makes the gateway's
   own overhead visible under the LLM's noise); and the per-step latency of ``/v1/ask``
   from its traces (median over the questions).

The questions of parts 1, 2 and 4 and the silo copied for them come from the corpus
federation of ``bench/routing_federation.py``, built once under ``--cache-dir`` (default
``.bench/routing-fed``) and reused while the corpus settings stay the same. Example:

    .venv/bin/python bench/bench_gateway.py --queries 200 --deadline-queries 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx
import uvicorn
from routing_federation import add_federation_arguments, corpora_list, corpus_federation, log, write_silo
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from federation.config import GatewaySettings, LLMEndpointSettings, RetrievalSettings
from federation.encoder import SentenceTransformerEncoder
from federation.identity import PRIVATE_KEY_FILE, Identity
from federation.membership import GatewayEntry, Membership, SiloEntry, save_membership
from federation.services import fedrag_service, free_port
from federation.signing import RequestSigner
from gateway.fanout import SiloPool
from gateway.llm_client import LLMClient, LLMSettings
from gateway.pipeline import ExecutorRun, Pipeline

STEPS = ("embed", "route", "search", "aggregate")


def pct_ms(samples: Sequence[float], q: float) -> float:
    """Percentile ``q`` of samples in seconds, in ms."""
    return float(np.percentile(np.asarray(samples), q)) * 1000


# --------------------------------------------------------------------------------------
# stub silos and the stub LLM (each in its own process), and an in-thread uvicorn server


@dataclass(frozen=True)
class Served:
    """A server in a child process: its URL, and its process id (to read its CPU time)."""

    url: str
    pid: int


def process_cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes have used so far (Linux ``/proc``, clock-tick resolution)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _stub_reply(name: str, k: int) -> dict[str, Any]:
    hits = [
        {
            "chunk_id": f"{name}:{i}",
            "doc_id": f"{name}-doc-{i}",
            "title": f"Stub passage {i}",
            "text": f"Stub passage {i} of silo {name}, standing in for a remote silo's answer.",
            "score": round(0.8 - 0.05 * i, 3),
        }
        for i in range(k)
    ]
    return {"silo": name, "hits": hits, "k_effective": k, "epsilon_spent": 0.0, "redactions": 0, "took_ms": 1.0}


_STUB_SEARCH_LINE = re.compile(rb"^POST /delay/([0-9.]+)/([A-Za-z0-9_.-]+)/v1/search HTTP/1\.1$")


class StubSearch(asyncio.Protocol):
    """Silos answering ``POST /delay/MS/NAME/v1/search`` with a valid reply after MS milliseconds.

    Bare asyncio, keep-alive, each reply encoded once: about 0.1 ms of CPU per request. The
    earlier uvicorn + Starlette stub spent 0.7-1.2 ms per request, serially in its one
    process on the gateway's 2 cores, which is not what silos on their own machines cost
    the gateway. It reads only what the gateway sends (Content-Length bodies).
    """

    replies: ClassVar[dict[tuple[bytes, int], bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (head_end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:head_end].split(b"\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body, self.buffer = self.buffer[head_end + 4 : end], self.buffer[end:]
            match = _STUB_SEARCH_LINE.match(lines[0])
            if match is None:
                self.transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                continue
            key = (match.group(2), int(json.loads(body)["k"]))
            reply = self.replies.get(key)
            if reply is None:
                payload = json.dumps(_stub_reply(key[0].decode(), key[1])).encode()
                head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
                reply = self.replies[key] = head.encode() + payload
            asyncio.get_running_loop().call_later(float(match.group(1)) / 1000, self._send, reply)

    def _send(self, reply: bytes) -> None:
        if not self.transport.is_closing():  # the gateway gave up (deadline): nobody to answer
            self.transport.write(reply)


def _serve_search_stubs(port: int) -> None:
    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(StubSearch, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(serve())


@contextlib.contextmanager
def search_stub_process() -> Iterator[Served]:
    """The stub silos in their own process."""
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=_serve_search_stubs, args=(port,), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the stub silo server did not start")
            time.sleep(0.1)
        assert process.pid is not None
        yield Served(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        process.join(timeout=10)


@contextlib.contextmanager
def silo_process(silo_dir: Path) -> Iterator[Served]:
    """``fedrag silo serve`` as a child process on a free loopback port."""
    url = f"http://127.0.0.1:{free_port()}"
    args = ["silo", "serve", str(silo_dir), "--port", url.rsplit(":", 1)[1], "--log-level", "warning"]
    with fedrag_service(args, f"{url}/readyz", timeout_s=60, what="silo") as process:
        yield Served(url, process.pid)


def stub_app() -> Starlette:
    """The stub LLM: ``/llm/v1/chat/completions`` streams ``max_tokens`` one-word deltas at once.

    The words are distinct (the gateway's loop guard would stop a repeated one); asked for a
    structured reply (``response_format``), the words are the ``answer`` of a JSON object.
    """

    async def chat(request: Request) -> Response:
        request_body = json.loads(await request.body())
        chunks = int(request_body.get("max_tokens") or 16)
        structured = "response_format" in request_body

        async def events() -> Any:
            for i in range(chunks + 1):
                text = f"word{i} "
                if structured and i == 1:
                    text = '{"reasoning": "", "answer": "' + text
                elif structured and i == chunks:
                    text += '", "citations": [1]}'
                delta = {"role": "assistant", "content": ""} if i == 0 else {"content": text}
                body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
                yield f"data: {json.dumps(body)}\n\n"
            end = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/llm/v1/chat/completions", chat, methods=["POST"]),
            Route("/healthz", health),
        ]
    )


def _serve_stubs(port: int) -> None:
    uvicorn.run(stub_app(), host="127.0.0.1", port=port, log_level="warning")


@contextlib.contextmanager
def stub_process() -> Iterator[str]:
    """The stub LLM in its own process (so its work does not share the gateway's GIL)."""
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=_serve_stubs, args=(port,), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the stub server did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.join(timeout=10)


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("in-thread server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# --------------------------------------------------------------------------------------
# the copy federation: N copies of one corpus silo, each with its own key and entry


@dataclass
class CopyFederation:
    root: Path
    membership: Membership  # URLs are placeholders; pools get the real ones
    gateway: Identity
    names: list[str]

    def silo_dir(self, name: str) -> Path:
        return self.root / "silos" / name

    def with_urls(self, urls: dict[str, str], extra: Sequence[SiloEntry] = ()) -> Membership:
        silos = [s.model_copy(update={"url": urls[s.name]}) for s in self.membership.silos if s.name in urls]
        data = self.membership.model_dump()
        return Membership.model_validate({**data, "silos": [s.model_dump() for s in (*silos, *extra)]})


def copy_federation(root: Path, template: Path, count: int, encoder: SentenceTransformerEncoder) -> CopyFederation:
    names = [f"s{i}" for i in range(count)]
    ids = {name: Identity.generate() for name in ("gateway", *names)}
    for name, identity in ids.items():
        identity.save(root / "keys" / name)
    membership = Membership(
        name="bench-fanout",
        embedding=encoder.spec(),
        silos=tuple(
            SiloEntry(name=n, url="http://127.0.0.1:1", public_key=ids[n].public.b64, description="disease definitions")
            for n in names
        ),
        gateways=(GatewayEntry(name="gw", public_key=ids["gateway"].public.b64),),
    )
    save_membership(root / "federation.toml", membership)
    for name in names:
        shutil.copytree(template, root / "silos" / name, ignore=shutil.ignore_patterns("silo.toml", "audit.jsonl*"))
        write_silo(root / "silos" / name, name, "disease definitions", name)
    return CopyFederation(root, membership, ids["gateway"], names)


def retrieval_settings(**overrides: Any) -> RetrievalSettings:
    return RetrievalSettings(**{"router": "all", "deadline_s": 60.0, "max_silos": 256, **overrides})


def make_pipeline(fed: CopyFederation, pool: SiloPool, settings: RetrievalSettings, encoder: Any, run: Any) -> Pipeline:
    gateway_settings = GatewaySettings(
        federation_file=fed.root / "federation.toml",
        key_file=fed.root / "keys" / "gateway" / PRIVATE_KEY_FILE,
        retrieval=settings,
    )
    unused_llm = LLMClient(LLMSettings(base_url="http://127.0.0.1:9", model="unused"))
    return Pipeline.from_settings(gateway_settings, encoder=encoder, pool=pool, llm=unused_llm, executor_run=run)


# --------------------------------------------------------------------------------------
# 1. fan-out and 2. deadline


async def fanout_and_deadline(
    args: argparse.Namespace,
    fed: CopyFederation,
    silos: dict[str, Served],
    stub_server: Served,
    encoder: SentenceTransformerEncoder,
    questions: list[str],
    vectors: np.ndarray,
    parts: set[str],
) -> None:
    silo_urls = {name: silo.url for name, silo in silos.items()}
    stub_url = stub_server.url
    signer = RequestSigner(fed.gateway)
    run = ExecutorRun()
    k = RetrievalSettings().k_per_silo
    n = len(fed.names)
    settings = retrieval_settings()
    pools = {
        ("real", 1): SiloPool(fed.with_urls({fed.names[0]: silo_urls[fed.names[0]]}), signer, settings),
        ("real", n): SiloPool(fed.with_urls(silo_urls), signer, settings),
    }
    for delay in args.stub_delay_ms:
        stubs = [
            SiloEntry(name=f"t{i}", url=f"{stub_url}/delay/{delay:g}/t{i}", public_key=Identity.generate().public.b64)
            for i in range(n)
        ]
        pools[(f"stub {delay:g}", 1)] = SiloPool(fed.with_urls({}, stubs[:1]), signer, settings)
        pools[(f"stub {delay:g}", n)] = SiloPool(fed.with_urls({}, stubs), signer, settings)
    pipes = {size: make_pipeline(fed, pools[("real", size)], settings, encoder, run) for size in (1, n)}
    silo_pids = [silo.pid for silo in silos.values()]
    try:
        if "fanout" in parts:
            await fanout(args, pools, pipes, n, k, questions, vectors, silo_pids, stub_server.pid)
        if "deadline" in parts:
            await deadline(args, fed, silo_urls, stub_url, encoder, run, questions, vectors, k)
    finally:
        for pool in pools.values():
            await pool.aclose()
        run.shutdown()


async def fanout(
    args: argparse.Namespace,
    pools: dict[tuple[str, int], SiloPool],
    pipes: dict[int, Pipeline],
    n: int,
    k: int,
    questions: list[str],
    vectors: np.ndarray,
    silo_pids: list[int],
    stub_pid: int,
) -> None:
    kinds = ["real", *(f"stub {delay:g}" for delay in args.stub_delay_ms), "retrieve"]
    samples: dict[tuple[str, int], list[float]] = {(kind, size): [] for kind in kinds for size in (1, n)}
    cpu: dict[tuple[str, int], list[float]] = {key: [] for key in samples}
    server_cpu = dict.fromkeys(samples, 0.0)  # CPU seconds of the silo or stub processes
    per_silo_ms: dict[tuple[str, int], list[float]] = {key: [] for key in samples}
    failures = 0
    total = args.queries + args.warmup
    log(f"fan-out: {total} queries ({args.warmup} warm-up), 1 vs {n} silos")
    for i in range(total):
        vector, question = vectors[i % len(vectors)], questions[i % len(questions)]
        order = (1, n) if i % 2 == 0 else (n, 1)  # alternate which size goes first
        for kind in kinds:
            servers = [stub_pid] if kind.startswith("stub") else silo_pids
            for size in order:
                s = process_cpu_s(servers)
                c, t = time.process_time(), time.perf_counter()
                if kind == "retrieve":
                    outcomes = (await pipes[size].retrieve(question)).outcomes
                else:
                    pool = pools[(kind, size)]
                    outcomes = await pool.search(pool.names, vector, k)
                elapsed, used = time.perf_counter() - t, time.process_time() - c
                failures += sum(o.status != "ok" for o in outcomes)
                if i >= args.warmup:
                    samples[(kind, size)].append(elapsed)
                    cpu[(kind, size)].append(used)
                    server_cpu[(kind, size)] += process_cpu_s(servers) - s
                    per_silo_ms[(kind, size)].extend(o.latency_ms for o in outcomes)

    def label(kind: str) -> str:
        if kind == "real":
            return "fan-out `SiloPool.search`, real silo processes"
        if kind == "retrieve":
            return "`Pipeline.retrieve` (embed, route, search, aggregate), real silo processes"
        return f"fan-out `SiloPool.search`, stub silos answering after {kind.split()[1]} ms (next to no CPU)"

    print(
        f"## 1. Fan-out: 1 vs {n} silos ({args.queries} queries interleaved, k_per_silo={k}, "
        f"router all, deadline {retrieval_settings().deadline_s:g} s; {failures} silo failures)\n"
    )
    print(
        f"| path | 1 silo p50 ms | 1 silo p95 ms | {n} silos p50 ms | {n} silos p95 ms | ratio p50 | ratio p95 | "
        f"mean per-silo call ms (1 / {n}) | gateway process CPU ms per question (1 / {n}) "
        f"| gateway CPU ms per extra silo call | silo or stub process CPU ms per request (1 / {n}) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in kinds:
        one, many = samples[(kind, 1)], samples[(kind, n)]
        p50_1, p95_1, p50_n, p95_n = pct_ms(one, 50), pct_ms(one, 95), pct_ms(many, 50), pct_ms(many, 95)
        call_1, call_n = statistics.mean(per_silo_ms[(kind, 1)]), statistics.mean(per_silo_ms[(kind, n)])
        cpu_1, cpu_n = statistics.mean(cpu[(kind, 1)]) * 1000, statistics.mean(cpu[(kind, n)]) * 1000
        served_1 = server_cpu[(kind, 1)] * 1000 / len(one)
        served_n = server_cpu[(kind, n)] * 1000 / (len(many) * n)
        print(
            f"| {label(kind)} | {p50_1:.1f} | {p95_1:.1f} | {p50_n:.1f} | {p95_n:.1f} | "
            f"{p50_n / p50_1:.2f} | {p95_n / p95_1:.2f} | {call_1:.1f} / {call_n:.1f} | {cpu_1:.1f} / {cpu_n:.1f} "
            f"| {(cpu_n - cpu_1) / (n - 1):.2f} | {served_1:.2f} / {served_n:.2f} |"
        )
    print()


async def deadline(
    args: argparse.Namespace,
    fed: CopyFederation,
    silo_urls: dict[str, str],
    stub_url: str,
    encoder: SentenceTransformerEncoder,
    run: ExecutorRun,
    questions: list[str],
    vectors: np.ndarray,
    k: int,
) -> None:
    signer = RequestSigner(fed.gateway)
    slow_url = f"{stub_url}/delay/{args.slow_s * 1000:g}/slow"
    slow = SiloEntry(name="slow", url=slow_url, public_key=Identity.generate().public.b64)
    membership = fed.with_urls(silo_urls, [slow])
    deadline_s = args.deadline_ms / 1000
    never = 1_000_000_000
    no_breaker = retrieval_settings(deadline_s=deadline_s, breaker_failures=never)
    default_breaker = retrieval_settings(deadline_s=deadline_s)
    pools = {
        "fanout": SiloPool(membership, signer, no_breaker),
        "retrieve": SiloPool(membership, signer, no_breaker),
        "default": SiloPool(membership, signer, default_breaker),
    }
    pipe = make_pipeline(fed, pools["retrieve"], no_breaker, encoder, run)
    samples: dict[str, list[float]] = {key: [] for key in pools}
    slow_status: dict[str, dict[str, int]] = {key: {} for key in pools}
    healthy_late = dict.fromkeys(pools, 0)
    healthy_late_questions = dict.fromkeys(pools, 0)
    total = args.deadline_queries + args.warmup
    log(f"deadline: {total} queries, {len(silo_urls)} healthy silos + 1 answering after {args.slow_s:g} s")
    try:
        for i in range(total):
            vector, question = vectors[i % len(vectors)], questions[i % len(questions)]
            for key, pool in pools.items():
                t = time.perf_counter()
                if key == "retrieve":
                    outcomes = (await pipe.retrieve(question)).outcomes
                else:
                    outcomes = await pool.search(pool.names, vector, k)
                elapsed = time.perf_counter() - t
                if i < args.warmup:
                    continue
                samples[key].append(elapsed)
                late = 0
                for outcome in outcomes:
                    if outcome.silo == "slow":
                        slow_status[key][outcome.status] = slow_status[key].get(outcome.status, 0) + 1
                    elif outcome.status != "ok":
                        late += 1
                healthy_late[key] += late
                healthy_late_questions[key] += late > 0
    finally:
        for pool in pools.values():
            await pool.aclose()
    labels = {
        "fanout": "fan-out `SiloPool.search`, breaker_failures=1e9 (never opens)",
        "retrieve": "`Pipeline.retrieve`, breaker_failures=1e9 (never opens)",
        "default": "fan-out `SiloPool.search`, default breaker (opens after 3 failures)",
    }
    print(
        f"## 2. Deadline: {len(silo_urls)} healthy silos + 1 answering after {args.slow_s:g} s, "
        f"deadline {args.deadline_ms:g} ms ({args.deadline_queries} queries, interleaved)\n"
    )
    print(
        "| path | p50 ms | p95 ms | p99 ms | max ms | p99 / deadline | slow silo outcomes "
        "| healthy silo calls not ok (questions) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for key, label in labels.items():
        s = samples[key]
        outcomes_text = ", ".join(f"{status} {count}" for status, count in sorted(slow_status[key].items()))
        print(
            f"| {label} | {pct_ms(s, 50):.1f} | {pct_ms(s, 95):.1f} | {pct_ms(s, 99):.1f} | {max(s) * 1000:.1f} | "
            f"{pct_ms(s, 99) / args.deadline_ms:.2f} | {outcomes_text} | "
            f"{healthy_late[key]} ({healthy_late_questions[key]}) |"
        )
    print()


# --------------------------------------------------------------------------------------
# 4. time to first token, and the per-step latency


class LLMShim(httpx.AsyncBaseTransport):
    """The gateway's transport to the LLM: records each chat body and adds ``cache_prompt: false``.

    llama.cpp reuses the KV cache of a previous request with the same prompt prefix; turned
    off for both paths so that neither is measured against a prompt the other just cached.
    """

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            body = json.loads(await request.aread())
            body["cache_prompt"] = False
            self.bodies.append(body)
            headers = [(k, v) for k, v in request.headers.items() if k.lower() != "content-length"]
            request = httpx.Request(request.method, request.url, headers=headers, content=json.dumps(body).encode())
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Streamed:
    first_token_s: float
    total_s: float
    final: dict[str, Any] | None

    def retrieval_ms(self) -> float:
        """Retrieval time (embed + route + search + aggregate) in the gateway's trace."""
        if self.final is None:
            raise RuntimeError("the gateway's stream ended without its trace")
        timings = self.final["fedrag_trace"]["timings_ms"]
        return float(sum(timings.get(step, 0.0) for step in STEPS))


def stream(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> Streamed:
    """POST a streaming chat request; time the first non-empty content (or reasoning) delta."""
    started = time.perf_counter()
    first: float | None = None
    final = None
    with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"{url}: {event['error']}")
            choices = event.get("choices") or []
            delta = (choices[0].get("delta") or {}) if choices else {}
            if first is None and (delta.get("content") or delta.get("reasoning_content")):
                first = time.perf_counter() - started
            if "fedrag_trace" in event:
                final = event
    total = time.perf_counter() - started
    return Streamed(first if first is not None else total, total, final)


@dataclass
class TTFTRun:
    bodies: list[dict[str, Any]]  # what the gateway sent to the LLM (pass 1), replayed directly
    gateway: list[Streamed]
    direct: list[Streamed]
    changed: int  # gateway prompts in pass 2 that differed from the replayed one


def measure_ttft(
    client: httpx.Client,
    gateway_url: str,
    api_key: str,
    shim: LLMShim,
    llm_url: str,
    questions: list[str],
    max_tokens: int,
    bodies: list[dict[str, Any]] | None = None,
) -> TTFTRun:
    """Stream each question through the gateway and its recorded LLM body straight to the LLM, interleaved.

    Without ``bodies``, a first unmeasured pass records what the gateway sends to the LLM;
    with them (recorded by another gateway over the same silo), one warm-up question runs.
    """
    auth = {"Authorization": f"Bearer {api_key}"}

    def ask_gateway(question: str) -> Streamed:
        body = {
            "model": "fedrag",
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "max_tokens": max_tokens,
        }
        return stream(client, f"{gateway_url}/v1/chat/completions", body, auth)

    if bodies is None:
        bodies = []
        for question in questions:  # pass 1, unmeasured: warms up and records the LLM request bodies
            ask_gateway(question)
            bodies.append(shim.bodies[-1])
    else:
        ask_gateway(questions[0])
    run = TTFTRun(bodies, [], [], 0)
    for i, (question, body) in enumerate(zip(questions, bodies, strict=True)):
        for path in ("gateway", "direct") if i % 2 == 0 else ("direct", "gateway"):
            if path == "gateway":
                run.gateway.append(ask_gateway(question))
                run.changed += shim.bodies[-1] != body
            else:
                run.direct.append(stream(client, f"{llm_url}/v1/chat/completions", body, {"Connection": "close"}))
    return run


def llm_benchmark(
    args: argparse.Namespace,
    fed: CopyFederation,
    stub_url: str,
    encoder: SentenceTransformerEncoder,
    questions: list[str],
) -> None:
    from gateway.apikeys import ApiKeyStore
    from gateway.app import create_app as gateway_app
    from silo_node.app import create_app as silo_app

    silo = fed.names[0]
    llm_port = free_port()
    llm_url = f"http://127.0.0.1:{llm_port}"
    log("LLM: starting the embedded LLM server, a stub LLM, and gateways in front of 1 in-process silo")
    with (
        fedrag_service(
            ["llm", "serve", "--port", str(llm_port)],
            f"{llm_url}/v1/models",
            log=fed.root / "llm.log",
            what="LLM server",
            timeout_s=300,
        ),
        serve_in_thread(silo_app(fed.silo_dir(silo)), free_port()) as silo_url,
    ):
        federation_file = fed.root / "federation-gateway.toml"
        save_membership(federation_file, fed.with_urls({silo: silo_url}))
        keys_file = fed.root / "api-keys.json"
        api_key = ApiKeyStore.add(keys_file, f"bench-{time.time_ns()}")
        stub_llm_url = f"{stub_url}/llm"

        def settings(url: str) -> GatewaySettings:
            return GatewaySettings(
                federation_file=federation_file,
                key_file=fed.root / "keys" / "gateway" / PRIVATE_KEY_FILE,
                api_keys_file=keys_file,
                rate_limit_per_minute=100_000,
                llm=LLMEndpointSettings(base_url=url, max_tokens=args.max_tokens, timeout_s=300),
                retrieval=retrieval_settings(deadline_s=10.0),
            )

        shim, stub_shim = LLMShim(), LLMShim()
        with (
            serve_in_thread(gateway_app(settings(llm_url), encoder=encoder, llm_transport=shim), free_port()) as gw,
            serve_in_thread(
                gateway_app(settings(stub_llm_url), encoder=encoder, llm_transport=stub_shim), free_port()
            ) as stub_gw,
            httpx.Client(timeout=600) as client,
        ):
            stub = measure_ttft(client, stub_gw, api_key, stub_shim, stub_llm_url, questions, args.max_tokens)
            real = measure_ttft(client, gw, api_key, shim, llm_url, questions, args.max_tokens, stub.bodies)
            runs = {"stub": stub, "real": real}
            steps: list[dict[str, float]] = []
            wall: list[float] = []
            for question in questions:
                t = time.perf_counter()
                response = client.post(
                    f"{gw}/v1/ask", json={"question": question}, headers={"Authorization": f"Bearer {api_key}"}
                )
                wall.append(time.perf_counter() - t)
                response.raise_for_status()
                steps.append(response.json()["trace"]["timings_ms"])

    med = statistics.median
    columns = {}
    for key, run in runs.items():
        retrieval = [r.retrieval_ms() for r in run.gateway]
        gateway = [r.first_token_s * 1000 for r in run.gateway]
        direct = [r.first_token_s * 1000 for r in run.direct]
        columns[key] = [
            med(gateway),
            med(retrieval),
            med(g - r for g, r in zip(gateway, retrieval, strict=True)),
            med(direct),
            med(g - r - d for g, r, d in zip(gateway, retrieval, direct, strict=True)),
            med(r.total_s * 1000 for r in run.gateway),
            med(r.total_s * 1000 for r in run.direct),
        ]
    prompt_chars = med(len(json.dumps(b["messages"])) for b in runs["real"].bodies)
    print(
        f"## 4. Time to first token: gateway vs the LLM server directly ({len(questions)} questions, 1 silo, "
        f"max_tokens {args.max_tokens}; the gateway's own LLM request body replayed directly, cache_prompt off, "
        f"interleaved; medians over the questions; prompt {prompt_chars:.0f} characters of JSON messages)\n"
    )
    rows = [
        "gateway: time to first content chunk",
        "gateway: retrieval in its trace (embed + route + search + aggregate)",
        "gateway: first chunk minus retrieval",
        "LLM server directly: time to first content chunk",
        "**gateway overhead excluding retrieval** (per question: gateway - retrieval - direct)",
        "gateway: whole stream",
        "LLM server directly: whole stream",
    ]
    print(f"| ms | embedded LLM (SmolLM2-135M, llama.cpp) | stub LLM ({args.max_tokens} chunks at once) |")
    print("|---|---:|---:|")
    for i, row in enumerate(rows):
        print(f"| {row} | {columns['real'][i]:.1f} | {columns['stub'][i]:.1f} |")
    changed = runs["real"].changed + runs["stub"].changed
    if changed:
        print(f"\n({changed} gateway prompts differed from the recorded one replayed directly.)")
    print()
    print(f"End-to-end latency per step, `/v1/ask` traces, embedded LLM ({len(questions)} questions, medians, ms):\n")
    keys = [*STEPS, "generate", "total"]
    print("| " + " | ".join(keys) + " | client wall |")
    print("|" + "---:|" * (len(keys) + 1))
    cells = [f"{med(s.get(key, 0.0) for s in steps):.1f}" for key in keys]
    print("| " + " | ".join(cells) + f" | {med(wall) * 1000:.1f} |")
    print()


# --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="fanout,deadline,llm", help="which parts to run (comma list)")
    parser.add_argument("--silos", type=int, default=8, help="silos in the fan-out and deadline parts (vs 1)")
    parser.add_argument("--queries", type=int, default=200, help="fan-out queries (each measured 1 vs N silos)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured queries before each measurement")
    parser.add_argument(
        "--stub-delay-ms", default="10,50", help="answer delays of the stub silos in part 1 (comma list, ms)"
    )
    parser.add_argument("--deadline-ms", type=float, default=300.0, help="per-question deadline in part 2")
    parser.add_argument("--slow-s", type=float, default=1.0, help="how late the slow silo answers in part 2")
    parser.add_argument("--deadline-queries", type=int, default=100, help="queries in part 2")
    parser.add_argument("--llm-questions", type=int, default=10, help="questions in part 4")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per answer in part 4")
    add_federation_arguments(parser)
    args = parser.parse_args()
    args.corpora = corpora_list(args.corpora)
    args.stub_delay_ms = [float(d) for d in args.stub_delay_ms.split(",") if d.strip()]
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"fanout", "deadline", "llm"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    encoder = SentenceTransformerEncoder()
    encoder.encode(["warm up"])
    fed = corpus_federation(args, encoder)
    print(f"# Gateway benchmark ({time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f} at start)\n")

    template_corpus = "mondo" if "mondo" in args.corpora else args.corpora[0]
    # queries for parts 1-2: every routing question (all corpora) against copies of one corpus silo
    questions = [q for _, q in fed.questions]
    vectors = encoder.encode(questions)
    llm_questions = [f"What is {q}?" for c, q in fed.questions if c == template_corpus][: args.llm_questions]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, contextlib.ExitStack() as stack:
        stub_url = stack.enter_context(stub_process()) if "llm" in parts else ""
        if parts & {"fanout", "deadline"}:
            copies = copy_federation(Path(tmp) / "fanout", fed.silo_dir(template_corpus), args.silos, encoder)
            print(
                f"Parts 1-2: {args.silos} `fedrag silo serve` processes on loopback, each a copy of the "
                f"{template_corpus} silo ({args.per_corpus} documents); stub silos in one other process "
                "(bare asyncio); "
                f"query vectors = the {len(questions)} routing questions.\n"
            )
            with contextlib.ExitStack() as running:
                stub_server = running.enter_context(search_stub_process())
                log(f"starting {args.silos} silo processes")
                silos = {n: running.enter_context(silo_process(copies.silo_dir(n))) for n in copies.names}
                asyncio.run(fanout_and_deadline(args, copies, silos, stub_server, encoder, questions, vectors, parts))
        if "llm" in parts:
            single = copy_federation(Path(tmp) / "llm", fed.silo_dir(template_corpus), 1, encoder)
            llm_benchmark(args, single, stub_url, encoder, llm_questions)
    print(f"load average at end {os.getloadavg()[0]:.2f}; whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
