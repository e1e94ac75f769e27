"""The gateway's FastAPI app, built by a factory; clients, encoder and pool open in lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from federation.config import GatewaySettings
from federation.encoder import Encoder, encoder_for
from federation.errors import ConfigError
from federation.http import BodyLimitMiddleware, RequestCounter, describe_api, register_error_handlers
from federation.identity import Identity
from federation.membership import load_membership
from federation.redis_state import RedisState
from federation.signing import RequestSigner
from gateway.admission import Admission
from gateway.api import ask_router, chat_router, info_router, retrieve_router
from gateway.apikeys import ApiKeyStore, RateLimiter
from gateway.dp_answer import DPAnswerer
from gateway.fanout import SiloPool
from gateway.llm_client import LLMClient, LLMSettings
from gateway.metrics import GatewayMetrics
from gateway.pipeline import ExecutorRun, Pipeline
from gateway.privacy_ledger import DocumentLedger, PrivacyLedger
from gateway.redis_stores import RedisPrivacyLedger, RedisRateLimiter
from gateway.token_client import LlamaCppTokens

logger = logging.getLogger(__name__)
BEARER = "An end-user API key ('fedrag gateway keys add'), sent as 'Authorization: Bearer KEY'."


def llm_settings(settings: GatewaySettings) -> LLMSettings:
    """The LLM client's settings from the gateway's."""
    llm = settings.llm
    return LLMSettings(
        base_url=llm.base_url,
        model=llm.model,
        api_key=llm.api_key,
        lora_adapter=llm.lora_adapter,
        timeout_s=llm.timeout_s,
        max_tokens=llm.max_tokens,
        temperature=llm.temperature,
        context_tokens=llm.context_tokens,
        lora_ids={name: i for i, name in enumerate(llm.adapters)} if llm.server == "llama.cpp" else {},
    )


def create_app(
    settings: GatewaySettings,
    *,
    encoder: Encoder | None = None,
    silo_transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    llm_transport: httpx.AsyncBaseTransport | None = None,
    silo_verify: Any = True,
) -> FastAPI:
    """Build the gateway's app.

    Args:
        settings: the gateway's settings.
        encoder: the shared embedding encoder (loaded from the installed model when omitted).
        silo_transports: per-silo httpx transports (in-process silos in tests).
        llm_transport: an httpx transport for the LLM server.
        silo_verify: TLS verification for silo connections (CA bundle path or SSL context).
    """
    if settings.api_keys_file is None:
        raise ConfigError(
            "the gateway needs an API key file (--api-keys FILE; create keys with 'fedrag gateway keys add')"
        )
    api_keys = ApiKeyStore.load(settings.api_keys_file)
    if len(api_keys) == 0:
        raise ConfigError(f"{settings.api_keys_file} holds no API keys")
    membership = load_membership(settings.federation_file)
    identity = Identity.load(settings.key_file)
    if identity.key_id not in membership.gateway_keys():
        raise ConfigError(
            f"{settings.key_file} ({identity.key_id}) is not a gateway of federation '{membership.name}': "
            "run 'fedrag federation add-gateway' first"
        )
    cfg = settings.retrieval
    metrics = GatewayMetrics()
    if settings.dp_answer.enabled and settings.llm.server != "llama.cpp":
        raise ConfigError("DP answers ([dp_answer] enabled) need a llama.cpp LLM server (llm.server = 'llama.cpp')")
    # Shared with every gateway process given the same state_url; connects on first use.
    state = RedisState(settings.state_url, namespace=membership.name) if settings.state_url else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        run = ExecutorRun()
        enc = encoder or encoder_for(membership.embedding)
        if enc.fingerprint != membership.embedding.fingerprint:
            raise ConfigError("the installed embedding model differs from the federation's (fingerprint mismatch)")
        await run(enc.encode, ["warm up"])
        pool = SiloPool(membership, RequestSigner(identity), cfg, transports=silo_transports, verify=silo_verify)
        llm = LLMClient(llm_settings(settings), transport=llm_transport)
        await pool.refresh_cards(force=True)
        pipeline = Pipeline.from_settings(settings, encoder=enc, pool=pool, llm=llm, executor_run=run)
        dp = settings.dp_answer
        tokens: LlamaCppTokens | None = None
        ledger: DocumentLedger | None = None
        if dp.enabled:
            # Every adapter's scale at 0: the base model, and no prompt cache computed with an adapter.
            lora = [{"id": i, "scale": 0.0} for i in range(len(settings.llm.adapters))] or None
            tokens = LlamaCppTokens(
                settings.llm.base_url, api_key=settings.llm.api_key, timeout_s=settings.llm.timeout_s, lora=lora
            )
            if state is None:
                ledger = PrivacyLedger(dp.ledger_file, budget=dp.document_budget)
            else:
                await run(state.warn_unless_durable, "the DP answers' privacy ledger")
                ledger = RedisPrivacyLedger(state, budget=dp.document_budget)
            pipeline.dp_answerer = DPAnswerer(dp, tokens=tokens, ledger=ledger)
        app.state.pipeline = pipeline
        shared = state.location if state is not None else "this process"
        logger.info(
            "gateway ready", extra={"federation": membership.name, "silos": len(membership.silos), "state": shared}
        )
        try:
            yield
        finally:
            app.state.pipeline = None
            await pool.aclose()
            await llm.aclose()
            if tokens is not None:
                await tokens.aclose()
            if ledger is not None:
                ledger.close()
            if state is not None:
                state.close()
            run.shutdown()

    app = FastAPI(
        title=f"fedrag gateway ({membership.name})",
        version="1",
        description="Federated RAG: routed retrieval over private silos, chain-of-thought answers with citations.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.api_keys = api_keys
    per_minute = settings.rate_limit_per_minute
    app.state.rate_limiter = RateLimiter(per_minute) if state is None else RedisRateLimiter(state, per_minute)
    admission = settings.admission
    app.state.generations = Admission(
        "answers", slots=settings.llm.parallel, queue=admission.generation_queue, wait_s=admission.queue_wait_s
    )
    app.state.retrievals = Admission(
        "retrievals", slots=admission.retrievals, queue=admission.retrieval_queue, wait_s=admission.queue_wait_s
    )
    app.state.pipeline = None
    register_error_handlers(app)
    app.include_router(ask_router)
    app.include_router(chat_router)
    app.include_router(retrieve_router)
    app.include_router(info_router)
    describe_api(app, schemes={"bearer": {"type": "http", "scheme": "bearer", "description": BEARER}})
    app.add_middleware(RequestCounter, counter=metrics.requests)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app
