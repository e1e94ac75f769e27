"""Dependencies shared by the gateway's routes: the pipeline, API-key callers, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from federation.errors import FedragError, ValidationFailed
from federation.http import started_state
from gateway.admission import Admission
from gateway.apikeys import ApiKeyStore, RequestLimiter
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline

_T = TypeVar("_T")


def get_pipeline(request: Request) -> Pipeline:
    """The app's pipeline (503 while starting)."""
    pipeline: Pipeline = started_state(request, "pipeline", "gateway")
    return pipeline


def get_generations(request: Request) -> Admission:
    """The bound on concurrent generations (the LLM server's slots)."""
    admission: Admission = request.app.state.generations
    return admission


def get_retrievals(request: Request) -> Admission:
    """The bound on concurrent retrieval-only requests."""
    admission: Admission = request.app.state.retrievals
    return admission


def get_metrics(request: Request) -> GatewayMetrics:
    """The app's metrics."""
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


def api_caller(request: Request) -> str:
    """Authenticate the end user's API key (401) and apply its rate limit (429); return the key's name."""
    keys: ApiKeyStore = request.app.state.api_keys
    limiter: RequestLimiter = request.app.state.rate_limiter
    name = keys.authenticate(request.headers.get("authorization"))
    limiter.take(name)
    return name


def metrics_reader(request: Request) -> str:
    """Authenticate an API key (401) for ``/metrics``, outside its rate limit (a scraper polls)."""
    keys: ApiKeyStore = request.app.state.api_keys
    return keys.authenticate(request.headers.get("authorization"))


async def cancel_on_disconnect(request: Request, work: Awaitable[_T], *, poll_s: float = 0.25) -> _T:
    """Run ``work``; cancel it if the client disconnects first (no answer is computed for nobody)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise FedragError("client disconnected", code="client_disconnected")
    finally:
        if not task.done():
            task.cancel()


def check_question_length(pipeline: Pipeline, question: str) -> None:
    """422 ``too_long`` for a question over the gateway's ``max_question_chars``."""
    limit = pipeline.settings.max_question_chars
    if len(question) > limit:
        raise ValidationFailed(f"question is over {limit} characters", code="too_long")
