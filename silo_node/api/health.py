"""Health routes (no credentials: they reveal nothing) and metrics (the operator token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from federation.http import METRICS_RESPONSE, problem_response, problem_schema
from silo_node.api.deps import operator
from silo_node.metrics import SiloMetrics

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["operator"], dependencies=[Depends(operator)])


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


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={**METRICS_RESPONSE, 401: problem_schema(), 403: problem_schema()},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (``Authorization: Bearer <operator token>``): refusals by reason, per-key activity."""
    registry: SiloMetrics = request.app.state.metrics
    service = getattr(request.app.state, "service", None)
    if service is not None:
        registry.index_vectors.set(len(service.index))
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
