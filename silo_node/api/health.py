"""Health and metrics routes (no credentials: they reveal nothing private)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from federation.http import METRICS_RESPONSE, problem_response
from silo_node.metrics import SiloMetrics

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> dict[str, str] | Response:
    """The index is loaded and the silo can answer searches."""
    if getattr(request.app.state, "service", None) is None:
        return problem_response(503, "not_ready", "Not ready", "index is loading")
    return {"status": "ready"}


@router.get("/metrics", response_class=Response, responses=METRICS_RESPONSE)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    registry: SiloMetrics = request.app.state.metrics
    service = getattr(request.app.state, "service", None)
    if service is not None:
        registry.index_vectors.set(len(service.index))
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
