"""Wire models of the silo's operator routes (not part of the federation contract)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DocumentIn(BaseModel):
    """A document to add or replace."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=512, description="Document id; re-adding an id replaces it.")
    title: str = Field("", max_length=2000)
    text: str = Field(min_length=1, max_length=5_000_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddDocumentsRequest(BaseModel):
    """``POST /v1/admin/documents``."""

    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class ProblemOut(BaseModel):
    """A document the silo could not ingest."""

    source: str
    reason: str


class IngestResult(BaseModel):
    """What an ingestion did."""

    added: int
    updated: int
    unchanged: int
    chunks: int
    problems: list[ProblemOut]
    seconds: float


class DocumentOut(BaseModel):
    """One stored document."""

    doc_id: str
    title: str
    source: str
    chunk_count: int
    content_hash: str
    updated_at: float


class DeleteResult(BaseModel):
    """A deleted document."""

    doc_id: str
    chunks_removed: int
