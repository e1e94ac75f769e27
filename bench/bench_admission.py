"""Gateway under concurrent load (issue 10): admission control against none, side by side in one run.

The demo federation (``gateway.demo``: five silos, the gateway, as processes on loopback) is
asked ``/v1/ask`` by 1, 5, 20 and 50 concurrent clients, each sending ``--requests`` questions
one after another. Two LLMs answer:

- a stub LLM (in this process) with one slot that takes ``--stub-s`` per answer, and
- the embedded llama.cpp server (``fedrag llm serve``, one slot).

With the stub, the same load also runs against a gateway without admission control (its
generation bound set to 1,000, the old behaviour): requests pile up inside the LLM server
until they run into the LLM timeout. Per row: requests answered (200), refused (429 with
Retry-After), failed (5xx: 504 timeouts separately), throughput (answers per second), p50 and
p95 latency of the answers, the slowest request of any status, and the wall time.

Example (figures in bench/RESULTS.md)::

    .venv/bin/python bench/bench_admission.py --work .bench/admission
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from bench_gateway import serve_in_thread  # noqa: E402
from rich.console import Console  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from federation.services import free_port  # noqa: E402
from gateway.demo import build, running_federation  # noqa: E402

QUESTIONS = (
    "What is hypertrophic cardiomyopathy?",
    "How do I parse a JSON string into a Python dictionary?",
    "What is asthma?",
    "What does the HPO term seizure mean?",
)
CONCURRENCY = (1, 5, 20, 50)


def stub_llm(seconds: float) -> Starlette:
    """An OpenAI-compatible LLM with one slot: each answer holds it ``seconds`` (no CPU)."""
    slot = asyncio.Lock()
    answer = json.dumps(
        {"reasoning": "Source [1] answers it.", "answer": "See the first source [1].", "citations": [1]}
    )

    async def chat(request: Request) -> Response:
        body = await request.json()
        async with slot:
            await asyncio.sleep(seconds)
        if not body.get("stream"):
            message = {"role": "assistant", "content": answer}
            usage = {"prompt_tokens": 100, "completion_tokens": 20}
            return JSONResponse(
                {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}
            )

        async def chunks() -> AsyncIterator[bytes]:
            for piece, finish in ((answer, None), ("", "stop")):
                chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "smollm2-135m-instruct", "object": "model"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])


@dataclass
class Row:
    """One load level against one gateway."""

    llm: str
    admission: str
    clients: int
    statuses: Counter[int]
    answered_s: list[float]
    slowest_s: float
    wall_s: float

    def line(self) -> str:
        ok = self.statuses.get(200, 0)
        failed = sum(n for s, n in self.statuses.items() if s >= 500)
        p50 = statistics.median(self.answered_s) if self.answered_s else float("nan")
        p95 = p50
        if len(self.answered_s) >= 2:
            p95 = statistics.quantiles(self.answered_s, n=20, method="inclusive")[-1]
        return (
            f"| {self.llm} | {self.admission} | {self.clients} | {sum(self.statuses.values())} | {ok} | "
            f"{self.statuses.get(429, 0)} | {failed} ({self.statuses.get(504, 0)}) | {ok / self.wall_s:.2f} | "
            f"{p50:.2f} | {p95:.2f} | {self.slowest_s:.1f} | {self.wall_s:.0f} |"
        )


async def load(
    url: str, key: str, clients: int, requests: int, timeout_s: float
) -> tuple[Counter[int], list[float], float, float]:
    """``clients`` concurrent clients, ``requests`` questions each: statuses, answer latencies, slowest, wall."""
    statuses: Counter[int] = Counter()
    answered: list[float] = []
    slowest = 0.0
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s, limits=limits) as http:

        async def client(n: int) -> None:
            nonlocal slowest
            for i in range(requests):
                started = time.perf_counter()
                try:
                    reply = await http.post("/v1/ask", json={"question": QUESTIONS[(n + i) % len(QUESTIONS)]})
                    status = reply.status_code
                except httpx.TimeoutException:
                    status = 599  # the client gave up
                took = time.perf_counter() - started
                statuses[status] += 1
                slowest = max(slowest, took)
                if status == 200:
                    answered.append(took)

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
    return statuses, answered, slowest, time.perf_counter() - started


def run_levels(
    llm: str, admission: str, url: str, key: str, levels: Sequence[int], requests: int, timeout_s: float
) -> list[Row]:
    rows = []
    for clients in levels:
        statuses, answered, slowest, wall = asyncio.run(load(url, key, clients, requests, timeout_s))
        rows.append(Row(llm, admission, clients, statuses, answered, slowest, wall))
        print(rows[-1].line(), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "admission", help="Demo federation directory.")
    parser.add_argument("--per-corpus", type=int, default=100, help="Documents per packaged corpus in each silo.")
    parser.add_argument("--requests", type=int, default=2, help="Questions each client sends, one after another.")
    parser.add_argument("--stub-s", type=float, default=0.5, help="Seconds the stub LLM takes per answer.")
    parser.add_argument("--llm-timeout", type=float, default=20.0, help="The gateway's LLM timeout (seconds).")
    parser.add_argument("--queue-wait", type=float, default=10.0, help="The gateway's longest wait for a slot.")
    parser.add_argument("--skip-embedded", action="store_true", help="Only the stub LLM.")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    build(args.work, args.per_corpus, console)
    common = ["--llm-timeout", str(args.llm_timeout), "--rate-limit", "100000", "--log-level", "warning"]
    env_wait = {"FEDRAG_GATEWAY_ADMISSION__QUEUE_WAIT_S": str(args.queue_wait)}
    os.environ.update(env_wait)  # the gateway processes inherit it
    client_timeout = args.llm_timeout + args.queue_wait + 60
    print(
        "| LLM | admission | clients | requests | 200 | 429 | 5xx (504) | answers/s | p50 s | p95 s | slowest s "
        "| wall s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    rows: list[Row] = []
    with serve_in_thread(stub_llm(args.stub_s), free_port()) as stub:
        for label, extra in (("on (1 slot, queue 8)", ["--llm-parallel", "1"]), ("off", ["--llm-parallel", "1000"])):
            with running_federation(args.work, console, llm_url=stub, gateway_args=[*common, *extra]) as (url, key):
                rows += run_levels(
                    f"stub {args.stub_s:g} s", label, url, key, CONCURRENCY, args.requests, client_timeout
                )
    if not args.skip_embedded:
        with running_federation(args.work, console, gateway_args=[*common, "--llm-parallel", "1"]) as (url, key):
            rows += run_levels("embedded", "on (1 slot, queue 8)", url, key, CONCURRENCY, args.requests, client_timeout)


if __name__ == "__main__":
    main()
