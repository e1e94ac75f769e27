"""``POST /v1/chat/completions``: the OpenAI protocol, answered by the federation (streaming or not).

The reasoning is returned as ``reasoning_content`` (as vLLM's reasoning parsers do), the
citations, the checked claims and the routing trace as extra fields ``citations``,
``fedrag_claims``, ``fedrag_grounded`` and ``fedrag_trace``, and a DP answer's cost (model
``fedrag-dp``) as ``fedrag_privacy``. An answer the loop guard cut short finishes with ``length``
(``fedrag_finish_reason``: ``repetition``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from federation.errors import ClientError, FedragError
from federation.http import problem_schema
from gateway.admission import Admission
from gateway.api.ask import record
from gateway.api.deps import (
    api_caller,
    cancel_on_disconnect,
    check_question_length,
    get_generations,
    get_metrics,
    get_pipeline,
)
from gateway.conversation import standalone_question
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.protocol import AskResponse, ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["openai"])
_ERRORS: dict[int | str, dict[str, object]] = {c: problem_schema() for c in (400, 401, 404, 422, 429, 502, 503, 504)}


def _extras(answer: AskResponse) -> dict[str, Any]:
    return {
        "citations": [c.model_dump() for c in answer.citations],
        "fedrag_claims": [c.model_dump() for c in answer.claims],
        "fedrag_grounded": answer.grounded,
        "fedrag_abstained": answer.abstained,
        "fedrag_finish_reason": answer.finish_reason,
        "fedrag_trace": answer.trace.model_dump(),
        "fedrag_partial": answer.partial,
        "fedrag_privacy": answer.privacy.model_dump() if answer.privacy is not None else None,
    }


def _finish_reason(answer: AskResponse) -> str:
    """OpenAI's finish reason: an answer the loop guard cut short is ``length`` (``fedrag_finish_reason`` says why)."""
    return "stop" if answer.finish_reason == "stop" else "length"


def _usage(answer: AskResponse) -> dict[str, int]:
    tokens = answer.trace.llm_tokens
    prompt, completion = tokens.get("prompt") or 0, tokens.get("completion") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(answer: AskResponse, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{answer.trace.request_id}",
        "object": "chat.completion",
        "created": created,
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": answer.answer,
                    "reasoning_content": answer.reasoning or None,
                },
                "finish_reason": _finish_reason(answer),
            }
        ],
        "usage": _usage(answer),
        **_extras(answer),
    }


def _chunk(request_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


@router.post("/chat/completions", responses=_ERRORS, response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    caller: str = Depends(api_caller),
    pipeline: Pipeline = Depends(get_pipeline),  # noqa: B008
    metrics: GatewayMetrics = Depends(get_metrics),  # noqa: B008
    generations: Admission = Depends(get_generations),  # noqa: B008
) -> dict[str, Any] | StreamingResponse:
    """Chat completion grounded in the federation: the last user message is the question.

    A follow-up is searched for as a standalone question made from the conversation (see
    ``fedrag_trace.question`` and ``question_from``).

    ``model`` picks the base model or a served adapter (``fedrag:NAME``, see ``GET /v1/models``);
    an unknown name is a 404. Options the gateway cannot honour (``n`` > 1, tools) are a 400.
    Generations are bounded as for ``/v1/ask`` (429 ``overloaded`` with ``Retry-After``); a stream
    holds its slot until it ends.
    """
    if unsupported := body.unsupported():
        raise ClientError(unsupported, code="unsupported_option")
    pipeline = pipeline.for_model(body.model)
    check_question_length(pipeline, body.question())
    created = int(time.time())
    request_id = uuid.uuid4().hex[:16]
    max_tokens = body.max_completion_tokens or body.max_tokens
    conversation = pipeline.settings.conversation
    if not body.stream:
        async with generations.slot():
            question = await cancel_on_disconnect(
                request, standalone_question(body.messages, pipeline.llm, conversation)
            )
            answer = await cancel_on_disconnect(
                request, pipeline.answer(question, request_id=request_id, max_tokens=max_tokens)
            )
        record(metrics, answer)
        return _completion(answer, created)

    slot = AsyncExitStack()  # held until the stream ends
    await slot.enter_async_context(generations.slot())
    try:
        condense = standalone_question(body.messages, pipeline.llm, conversation)
        question = await cancel_on_disconnect(request, condense)
        events = pipeline.answer_stream(question, request_id=request_id, max_tokens=max_tokens)
        # Run retrieval before the response starts, so retrieval and LLM errors keep their HTTP status.
        first = await cancel_on_disconnect(request, anext(events))
    except BaseException:
        await slot.aclose()
        raise
    model = pipeline.model_name
    include_usage = body.stream_options is not None and body.stream_options.include_usage

    async def sse() -> AsyncIterator[str]:
        try:
            yield _chunk(request_id, created, model, {"role": "assistant", "content": ""})
            item: Any = first
            while True:
                if isinstance(item, AskResponse):
                    record(metrics, item)
                    final = json.loads(_chunk(item.trace.request_id, created, item.model, {}, _finish_reason(item))[6:])
                    final.update(_extras(item))
                    yield f"data: {json.dumps(final)}\n\n"
                    if include_usage:  # OpenAI's last chunk: no choices, the request's usage
                        usage = json.loads(_chunk(item.trace.request_id, created, item.model, {})[6:])
                        usage.update(choices=[], usage=_usage(item))
                        yield f"data: {json.dumps(usage)}\n\n"
                    break
                kind, text = item
                field = "reasoning_content" if kind == "reasoning" else "content"
                yield _chunk(request_id, created, model, {field: text})
                item = await anext(events)
        except FedragError as exc:
            error = {"error": {"message": exc.detail, "type": exc.code, "code": exc.status}}
            yield f"data: {json.dumps(error)}\n\n"
        finally:
            # The client may have gone: this scope is then cancelled, and an unshielded await here
            # would be cancelled too, leaving the LLM generating for nobody.
            with anyio.CancelScope(shield=True):
                await events.aclose()  # type: ignore[attr-defined]
                await slot.aclose()
        yield "data: [DONE]\n\n"

    # Also released after the response, for a client gone before the stream started (sse never ran).
    return StreamingResponse(
        sse(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
        background=BackgroundTask(slot.aclose),
    )
