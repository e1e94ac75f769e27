"""Operator routes: add, delete and list documents, read stats (operator token, not federation keys)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from federation.http import problem_schema
from silo_node.api.deps import get_service, operator
from silo_node.api.models import AddDocumentsRequest, DeleteResult, DocumentOut, IngestResult, ProblemOut
from silo_node.ingest import make_document
from silo_node.service import SiloService

router = APIRouter(
    prefix="/v1/admin",
    tags=["operator"],
    dependencies=[Depends(operator)],
    responses={401: problem_schema(), 403: problem_schema()},
)


@router.post("/documents", response_model=IngestResult)
async def add_documents(body: AddDocumentsRequest, service: SiloService = Depends(get_service)) -> IngestResult:  # noqa: B008
    """Add or replace documents; unchanged ones are skipped. Returns once they are durable."""
    items = [make_document(d.id, d.title, d.text, d.metadata, source=f"api:{d.id}") for d in body.documents]
    report = await service.run(service.ingest, items)
    return IngestResult(
        added=report.added,
        updated=report.updated,
        unchanged=report.unchanged,
        chunks=report.chunks,
        problems=[ProblemOut(source=p.source, reason=p.reason) for p in report.problems],
        seconds=report.seconds,
    )


@router.delete("/documents/{doc_id:path}", response_model=DeleteResult, responses={404: problem_schema()})
async def delete_document(doc_id: str, service: SiloService = Depends(get_service)) -> DeleteResult:  # noqa: B008
    """Delete a document: it leaves search results at once and the disk durably."""
    removed = await service.run(service.delete, doc_id)
    return DeleteResult(doc_id=doc_id, chunks_removed=removed)


@router.get("/documents", response_model=list[DocumentOut])
async def list_documents(
    service: SiloService = Depends(get_service),  # noqa: B008
    offset: int = Query(0, ge=0, le=2**62),
    limit: int = Query(100, ge=1, le=1000),
) -> list[DocumentOut]:
    """List stored documents, ordered by id."""
    docs = await service.run(service.documents, offset=offset, limit=limit)
    return [DocumentOut(**vars(d)) for d in docs]


@router.get("/stats")
async def stats(service: SiloService = Depends(get_service)) -> dict[str, Any]:  # noqa: B008
    """Counts and sizes."""
    return await service.run(service.stats)
