"""``POST /v1/ask``: question in, answer with reasoning, citations and trace out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from federation.http import problem_schema
from gateway.admission import Admission
from gateway.api.deps import (
    api_caller,
    cancel_on_disconnect,
    check_question_length,
    get_generations,
    get_metrics,
    get_pipeline,
)
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.protocol import AskRequest, AskResponse, Trace

router = APIRouter(prefix="/v1", tags=["qa"])
_ERRORS: dict[int | str, dict[str, object]] = {c: problem_schema() for c in (401, 404, 422, 429, 502, 503, 504)}


def record_retrieval(metrics: GatewayMetrics, trace: Trace) -> None:
    """Count a question's step timings and the outcome of each silo it asked."""
    for step, ms in trace.timings_ms.items():
        metrics.step_seconds.labels(step=step).observe(ms / 1000)
    for silo in trace.silos:
        if silo.routed:
            metrics.silo_outcomes.labels(silo=silo.silo, outcome=silo.outcome).inc()


def record(metrics: GatewayMetrics, response: AskResponse) -> None:
    """Count a finished answer's steps, silo outcomes and how it ended."""
    record_retrieval(metrics, response.trace)
    if response.partial:
        metrics.partial_answers.inc()
    if response.abstained:
        outcome = "abstained"
    elif response.grounded is None:
        outcome = "no_sources"
    else:
        outcome = "grounded" if response.grounded else "not_grounded"
    metrics.answers.labels(outcome=outcome).inc()
    if response.trace.generation and response.trace.generation.loop_detected:
        metrics.answers.labels(outcome="loop_stopped").inc()


@router.post("/ask", response_model=AskResponse, responses=_ERRORS)
async def ask(
    body: AskRequest,
    request: Request,
    caller: str = Depends(api_caller),
    pipeline: Pipeline = Depends(get_pipeline),  # noqa: B008
    metrics: GatewayMetrics = Depends(get_metrics),  # noqa: B008
    generations: Admission = Depends(get_generations),  # noqa: B008
) -> AskResponse:
    """Answer a question from the federation's silos, with step-by-step reasoning and citations.

    At most ``llm.parallel`` answers are generated at once; a request that finds every slot busy
    and the queue full, or waits for a slot longer than ``admission.queue_wait_s``, gets 429
    ``overloaded`` with ``Retry-After``.
    """
    pipeline = pipeline.for_model(body.model)
    check_question_length(pipeline, body.question)
    async with generations.slot():
        response = await cancel_on_disconnect(
            request, pipeline.answer(body.question, choices=body.choices, allow_llm_only=body.allow_llm_only)
        )
    record(metrics, response)
    return response
