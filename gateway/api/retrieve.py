"""``POST /v1/retrieve``: the federation's merged, released passages for a question, without the LLM.

For clients that bring their own LLM: the same routing, fan-out, merging, release policy,
authentication, rate limit and metrics as ``/v1/ask``, and a follow-up in a conversation is
condensed the same way as in chat completions.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from fastapi import APIRouter, Depends, Request

from federation.http import problem_schema
from gateway.admission import Admission
from gateway.api.ask import record_retrieval
from gateway.api.deps import (
    api_caller,
    cancel_on_disconnect,
    check_question_length,
    get_generations,
    get_metrics,
    get_pipeline,
    get_retrievals,
)
from gateway.conversation import Standalone, standalone_question
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.protocol import RetrievedPassage, RetrieveRequest, RetrieveResponse

router = APIRouter(prefix="/v1", tags=["qa"])
_ERRORS: dict[int | str, dict[str, object]] = {c: problem_schema() for c in (401, 422, 429, 503, 504)}


@router.post("/retrieve", response_model=RetrieveResponse, responses=_ERRORS)
async def retrieve(
    body: RetrieveRequest,
    request: Request,
    caller: str = Depends(api_caller),
    pipeline: Pipeline = Depends(get_pipeline),  # noqa: B008
    metrics: GatewayMetrics = Depends(get_metrics),  # noqa: B008
    retrievals: Admission = Depends(get_retrievals),  # noqa: B008
    generations: Admission = Depends(get_generations),  # noqa: B008
) -> RetrieveResponse:
    """Route, search and merge: the passages for a question (or a conversation's last question), best first.

    At most ``admission.retrievals`` run at once (429 ``overloaded`` with ``Retry-After`` beyond the
    queue); condensing a follow-up with the LLM also takes one of the LLM's slots.
    """
    check_question_length(pipeline, body.last_question())
    asked = Standalone(body.last_question(), "request")
    async with retrievals.slot():
        if body.messages is not None:
            conversation = pipeline.settings.conversation
            async with AsyncExitStack() as stack:
                if conversation.condense == "llm":  # the rewrite is a generation: it needs an LLM slot
                    await stack.enter_async_context(generations.slot())
                condense = standalone_question(body.messages, pipeline.llm, conversation)
                asked = await cancel_on_disconnect(request, condense)
        retrieval = await cancel_on_disconnect(request, pipeline.retrieve(asked, k=body.k, for_prompt=False))
    trace = pipeline.retrieval_trace(retrieval)
    record_retrieval(metrics, trace)
    hidden = not pipeline.settings.retrieval.show_silo_names
    passages = [
        RetrievedPassage(
            number=s.number,
            silo=s.silo_label,
            doc_id=s.passage.doc_id,
            chunk_id=f"{s.silo_label}:{s.number}" if hidden else s.passage.chunk_id,
            title=s.passage.title,
            text=s.passage.text,
            score=s.passage.score,
        )
        for s in retrieval.sources
    ]
    return RetrieveResponse(
        id=f"retrieve-{retrieval.request_id}",
        question=asked.question,
        passages=passages,
        partial=retrieval.partial,
        retrieved=bool(passages),
        trace=trace,
    )
