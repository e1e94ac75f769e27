"""The silo node's FastAPI app, built by a factory; the service opens and closes in lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from federation.config import SiloSettings, load_silo_settings
from federation.encoder import Encoder
from federation.http import BodyLimitMiddleware, RequestCounter, describe_api, register_error_handlers
from silo_node.api import health_router, metrics_router, operator_router, search_router
from silo_node.metrics import SiloMetrics
from silo_node.service import SiloService

logger = logging.getLogger(__name__)
SECURITY = {
    "signature": {
        "type": "apiKey",
        "in": "header",
        "name": "Signature",
        "description": "HTTP Message Signatures (RFC 9421) by a gateway key of the federation (Ed25519): "
        '\'Signature-Input: fedrag=("@method" "@path" "@query" "content-digest" "fedrag-audience");'
        "created=...;nonce=...;keyid=...', with Content-Digest and fedrag-audience (the silo's name) headers.",
    },
    "operator": {"type": "http", "scheme": "bearer", "description": "The silo operator's token (silo.toml)."},
}


CARD_REFRESH_S = 15.0


async def _keep_card_fresh(service: SiloService, every_s: float = CARD_REFRESH_S) -> None:
    """Rebuild the card soon after the index changes (an ingest by another process), not on a request."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await service.run(service.card)  # cheap when the index has not changed
        except Exception:  # a failed rebuild is retried next time; requests still get the last card
            logger.exception("card refresh failed")


def create_app(silo_dir: Path, settings: SiloSettings | None = None, *, encoder: Encoder | None = None) -> FastAPI:
    """Build the silo's app.

    Args:
        silo_dir: the silo's directory (``fedrag silo init``).
        settings: settings to use instead of reading ``silo_dir/silo.toml``.
        encoder: encoder for operator ingestion (loaded on first use when omitted).
    """
    settings = settings or load_silo_settings(silo_dir)
    metrics = SiloMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = SiloService(settings, silo_dir, encoder=encoder)
        await service.run(service.open)
        # The card (k-means over the index) is built before the silo reports ready: a gateway's
        # first card request must not wait for it (large silos take longer than its deadline).
        await service.run(service.card)
        app.state.verifier = service.verifier()
        app.state.service = service
        logger.info("silo ready", extra={"silo": settings.name, "vectors": len(service.index)})
        refresher = asyncio.create_task(_keep_card_fresh(service))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            app.state.service = None
            service.close()

    app = FastAPI(
        title=f"fedrag silo '{settings.name}'",
        version="1",
        description="A fedrag-serve silo node: signed search over a private index, behind a release policy.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.operator_token_sha256 = settings.operator_token_sha256
    app.state.service = None
    register_error_handlers(app)
    app.include_router(search_router)
    app.include_router(operator_router)
    app.include_router(health_router)
    app.include_router(metrics_router)
    describe_api(app, schemes=SECURITY, by_tag={"operator": "operator"})

    app.add_middleware(RequestCounter, counter=metrics.requests)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app
