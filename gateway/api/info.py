"""Models, silos, health, metrics and the chat page."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from federation.http import METRICS_RESPONSE, problem_response, problem_schema
from gateway.api.deps import api_caller, get_pipeline, metrics_reader
from gateway.metrics import GatewayMetrics
from gateway.models import model_names
from gateway.pipeline import Pipeline

router = APIRouter()


@router.get("/v1/models", tags=["openai"], responses={401: problem_schema()})
async def models(caller: str = Depends(api_caller), pipeline: Pipeline = Depends(get_pipeline)) -> dict[str, Any]:  # noqa: B008
    """The models requests may name: ``fedrag`` (the default), the base model, each served adapter as ``fedrag:NAME``.

    Any other name is refused with 404 ``model_not_found``.
    """
    names = model_names(pipeline.settings.llm, dp=pipeline.dp_answerer is not None)
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "fedrag"} for name in names],
    }


@router.get("/v1/silos", tags=["federation"], responses={401: problem_schema()})
async def silos(caller: str = Depends(api_caller), pipeline: Pipeline = Depends(get_pipeline)) -> dict[str, Any]:  # noqa: B008
    """Health, last latency and the routing view of every silo."""
    await pipeline.pool.refresh_cards()
    cfg = pipeline.settings.retrieval
    return {
        "router": pipeline.router.name,
        "max_silos": cfg.silo_budget(),
        "deadline_s": cfg.deadline_s,
        "silos": pipeline.pool.status() if cfg.show_silo_names else [],
    }


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], response_model=None)
async def readyz(request: Request) -> dict[str, str] | Response:
    """The encoder is loaded and the pipeline is up."""
    if getattr(request.app.state, "pipeline", None) is None:
        return problem_response(503, "not_ready", "Not ready", "gateway is starting")
    return {"status": "ready"}


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    dependencies=[Depends(metrics_reader)],
    responses={**METRICS_RESPONSE, 401: problem_schema()},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (an API key: ``Authorization: Bearer <key>``, not rate limited)."""
    registry: GatewayMetrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def chat_page() -> HTMLResponse:
    """The chat page (static; it asks for an API key and calls /v1/ask with it)."""
    return HTMLResponse(files("gateway").joinpath("static/index.html").read_text(encoding="utf-8"))
