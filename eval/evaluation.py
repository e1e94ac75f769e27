"""A whole evaluation run: the LLM, every suite, the per-question log and the report.

``run_evaluation`` is what ``fedrag eval run`` calls: it checks that ``OUT`` holds the
same run (or nothing), starts the embedded LLM server when configurations need answers
and no ``llm_url`` is given, runs each suite (:mod:`eval.runner`), and writes the report
(:mod:`eval.report`) from the log, which makes an interrupted run resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eval.embedding_cache import CachingEncoder
from eval.records import QuestionLog
from eval.report import write_report
from eval.runner import Progress, RunOptions, iter_suites, run_suite, write_run_file
from eval.suites import SuiteData
from federation.encoder import Encoder, make_encoder
from federation.services import fedrag_service, free_port
from gateway.llm_client import LLMClient, LLMSettings

__all__ = ["machine_description", "run_evaluation"]


def machine_description() -> str:
    """This machine in a few words (for the report)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.system()} {platform.machine()}, {cores} cores, Python {platform.python_version()}"


@contextlib.contextmanager
def _llm_endpoint(options: RunOptions) -> Iterator[str | None]:
    """The LLM base URL: the given one, the embedded server started here, or None when unneeded."""
    needed = options.llm_configs & {c.name for c in options.configs} or any(options.answers(c) for c in options.configs)
    if options.llm_url or not needed:
        yield options.llm_url
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Every core: the harness waits while the model generates (a gateway in production shares them).
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    command = ["llm", "serve", "--port", str(port), "--ctx", str(options.context_tokens), "--threads", str(threads)]
    command += [arg for a in options.lora_adapters for arg in ("--lora", f"{a.name}={a.path}")]
    with fedrag_service(
        command,
        f"{url}/v1/models",
        log=options.out / "llm.log",
        what="embedded LLM server",
    ):
        yield url


async def _run(options: RunOptions, suites: list[str], encoder: Encoder, progress: Progress, url: str | None) -> None:
    log = QuestionLog(options.out / "questions.jsonl")
    llm = None
    if url is not None:
        # The embedded llama.cpp server would reuse the prompt of an earlier configuration asked the
        # same question with the same sources, and make later configurations look faster: not here.
        embedded = options.llm_url is None
        llm = LLMClient(
            LLMSettings(
                base_url=url,
                model=options.llm_model,
                timeout_s=options.llm_timeout_s,
                max_tokens=options.mc_max_tokens,
                temperature=0.0,
                context_tokens=options.context_tokens,
                extra_body={"cache_prompt": False} if embedded else {},
                lora_adapter=options.default_adapter,
                lora_ids={a.name: i for i, a in enumerate(options.lora_adapters)},
            )
        )
    try:
        for suite in suites:
            data = await run_suite(options, suite, encoder, log, progress, llm)
            _record_suite(options.out, suite, data)
    finally:
        if llm is not None:
            await llm.aclose()


def _record_suite(out: Path, name: str, data: SuiteData) -> None:
    """Note in ``run.json`` what the suite held (the report's header for it)."""
    path = out / "run.json"
    run_file = json.loads(path.read_text(encoding="utf-8"))
    run_file.setdefault("suites", {})[name] = {
        "documents": len(data.documents),
        "retrieval": len(data.retrieval),
        "multiple_choice": len(data.multiple_choice),
        "code": len(data.code),
        "unanswerable": len(data.unanswerable),
        "calibration": len(data.calibration),
        "skipped": data.skipped,
    }
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(run_file, indent=1), encoding="utf-8")
    os.replace(partial, path)


def run_evaluation(
    options: RunOptions, *, suites: str, progress: Progress, encoder: Encoder | None = None
) -> dict[str, Any]:
    """Run (or resume) the evaluation into ``options.out``; return the results written."""
    names = options.suites or list(iter_suites(suites))
    write_run_file(options)
    started = time.perf_counter()
    caching = CachingEncoder(encoder or make_encoder(options.encoder_backend), options.out / "cache")
    with _llm_endpoint(options) as url:
        asyncio.run(_run(options, names, caching, progress, url))
    caching.save()
    if url is None:
        label = "none (no configuration generated answers)"
    elif options.llm_url is None:
        label = "the embedded llama.cpp server (`fedrag llm serve`)"
    else:
        label = url
    if options.default_adapter is not None:
        label += f", answering with LoRA adapter `fedrag:{options.default_adapter}`"
    return report(options.out, llm=label, seconds=time.perf_counter() - started)


def report(out: Path, *, llm: str | None = None, seconds: float | None = None) -> dict[str, Any]:
    """(Re)write ``report.md``, ``results.json`` and the plots of the run in ``out``."""
    run_file = json.loads((out / "run.json").read_text(encoding="utf-8"))
    meta: dict[str, Any] = {
        "options": run_file["identity"],
        "started": run_file.get("started"),
        "finished": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_description(),
        "llm": llm or run_file.get("llm", "unknown"),
        "seconds": seconds,
        "suites": run_file.get("suites", {}),
    }
    return write_report(out, QuestionLog(out / "questions.jsonl").rows(), meta)
