"""``POST /v1/search`` and ``GET /v1/card``: the signed routes gateways call."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends

from federation.errors import CrawlLimited
from federation.http import problem_schema
from federation.protocol import SearchRequest, SearchResponse, SiloCard
from federation.signing import Caller
from silo_node.api.deps import get_metrics, get_service, signed_caller
from silo_node.metrics import SiloMetrics
from silo_node.service import SiloService

router = APIRouter(prefix="/v1", tags=["federation"])
_ERRORS: dict[int | str, dict[str, Any]] = {code: problem_schema() for code in (401, 409, 413, 415, 422, 429)}


@router.post("/search", response_model=SearchResponse, responses=_ERRORS)
async def search(
    request: SearchRequest,
    caller: Caller = Depends(signed_caller),  # noqa: B008
    service: SiloService = Depends(get_service),  # noqa: B008
    metrics: SiloMetrics = Depends(get_metrics),  # noqa: B008
) -> SearchResponse:
    """Search this silo with one query vector (signed by a gateway of the federation)."""
    started = time.perf_counter()
    try:
        response = await service.run(service.search, caller.key_id, request)
    except CrawlLimited as refusal:
        metrics.crawl_refusals.labels(reason=refusal.code).inc()
        raise
    metrics.search_seconds.observe(time.perf_counter() - started)
    metrics.released_chunks.inc(len(response.hits))
    metrics.epsilon_spent.inc(response.epsilon_spent)
    return response


@router.get("/card", response_model=SiloCard, responses={401: problem_schema()})
async def card(
    caller: Caller = Depends(signed_caller),  # noqa: B008
    service: SiloService = Depends(get_service),  # noqa: B008
) -> SiloCard:
    """This silo's card for routing (signed by a gateway of the federation)."""
    return await service.run(service.card)
