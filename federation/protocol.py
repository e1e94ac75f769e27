"""The wire protocol between gateways and silos (``/v1``), as pydantic models.

Vectors travel as base64 little-endian float32 with an explicit shape. Requests forbid
unknown fields; every error body is a :class:`Problem`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from federation.membership import EmbeddingSpec

PROTOCOL_VERSION = "v1"
MAX_DIMENSION = 8192
MAX_K = 1000
MAX_ROWS = 4096
MAX_QUERY_TEXT_CHARS = 4000
SearchMode = Literal["dense", "lexical", "hybrid"]


def _clean_text(value: str) -> str:
    """Refuse text that is not valid Unicode (a lone UTF-16 surrogate, as JavaScript can send) or holds NUL."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (it holds a lone UTF-16 surrogate)") from None
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


CleanText = Annotated[str, AfterValidator(_clean_text)]
"""A text field of a request: valid Unicode without NUL (every text field of a request is one)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Matrix(BaseModel):
    """A float32 matrix of ``rows`` x ``dimension`` as base64 little-endian bytes."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(1, ge=0, le=MAX_ROWS, description="Number of vectors.")
    dimension: int = Field(ge=1, le=MAX_DIMENSION, description="Length of each vector.")
    data: str = Field(description="Base64 of rows*dimension little-endian float32 values.")

    @model_validator(mode="after")
    def _check(self) -> Matrix:
        self.to_numpy()
        return self

    def to_numpy(self) -> np.ndarray:
        """Decode to a (rows, dimension) float32 array; raise ValueError when invalid."""
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("data is not valid base64") from exc
        expected = self.rows * self.dimension * 4
        if len(raw) != expected:
            raise ValueError(f"data holds {len(raw)} bytes; {self.rows}x{self.dimension} float32 needs {expected}")
        array = np.frombuffer(raw, dtype="<f4").reshape(self.rows, self.dimension)
        if not np.isfinite(array).all():
            raise ValueError("vectors must be finite (no NaN or infinity)")
        return array.astype(np.float32)

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> Matrix:
        """Encode a 1-D or 2-D array."""
        array = np.asarray(array, dtype="<f4")
        if array.ndim == 1:
            array = array[None, :]
        rows, dim = array.shape
        return cls(rows=rows, dimension=dim, data=base64.b64encode(array.tobytes()).decode())


MAX_SHARDS = 64
MAX_EXCLUDED_DOCS = 1000


def shard_of(silo: str, doc_id: str, count: int) -> int:
    """Which of ``count`` shards a silo's document is in: a hash of the silo and document names.

    The same for every party and every search, and independent of every other document, so a
    document added or removed changes only its own shard (what DP answers rely on).
    """
    digest = hashlib.sha256(f"{silo}\x00{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


class Shard(_Request):
    """One of ``count`` disjoint parts of a silo's documents (:func:`shard_of`)."""

    count: int = Field(ge=2, le=MAX_SHARDS, description="How many shards the documents are split into.")
    index: int = Field(ge=0, description="The shard searched, 0 to count - 1.")

    @model_validator(mode="after")
    def _in_range(self) -> Shard:
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} must be below the count {self.count}")
        return self


class SearchRequest(_Request):
    """``POST /v1/search``: one query vector, how many passages are wanted."""

    vector: Matrix = Field(description="The query embedding (rows = 1).")
    k: int = Field(ge=1, le=MAX_K, description="Passages wanted; the silo may release fewer (max_k, min_score).")
    fingerprint: str = Field(min_length=1, max_length=200, description="Fingerprint of the model that embedded it.")
    request_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Caller's id for the audit log."
    )
    text: CleanText | None = Field(
        None,
        min_length=1,
        max_length=MAX_QUERY_TEXT_CHARS,
        description="The question's text, for a silo that also searches lexically (its card's search mode is "
        "lexical or hybrid); gateways send it to those silos only. Never logged or audited.",
    )
    shard: Shard | None = Field(
        None, description="Search only the documents of this shard (the top k among them); None: every document."
    )
    exclude_doc_ids: list[Annotated[str, Field(min_length=1, max_length=1024)]] | None = Field(
        None,
        max_length=MAX_EXCLUDED_DOCS,
        description="Documents to leave out, as if absent (a DP answer's documents whose budget is spent).",
    )

    @model_validator(mode="after")
    def _one_row(self) -> SearchRequest:
        if self.vector.rows != 1:
            raise ValueError("vector must hold exactly one row")
        return self


class SearchHit(_Reply):
    """One released passage."""

    chunk_id: str = Field(max_length=128)
    doc_id: str = Field(max_length=1024)
    title: str = Field("", max_length=2000)
    text: str | None = Field(None, description="Passage text after redaction; absent when the silo releases ids only.")
    score: float = Field(
        description="Inner product of normalised embeddings, in [-1, 1] (noised under DP). A lexical or hybrid "
        "search keeps its own order and gives the hit at each rank the rank's inner product among the hits "
        "(the best inner product to the first, and so on), so scores stay comparable across silos."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(_Reply):
    """The silo's answer to a search, after its release policy."""

    silo: str
    request_id: str | None = None
    hits: list[SearchHit]
    k_effective: int = Field(ge=0, description="How many passages the policy allowed for this request.")
    epsilon_spent: float = Field(0.0, ge=0, description="Differential-privacy budget this request used.")
    redactions: int = Field(0, ge=0, description="PII matches redacted from the released text.")
    took_ms: float = Field(0.0, ge=0)
    search: SearchMode = Field("dense", description="How this search ranked (dense when no question text came).")


class PolicySummary(_Reply):
    """What a caller may expect from the silo's release policy."""

    max_k: int
    min_score: float
    release_text: bool
    noisy_selection: bool = Field(False, description="Passages are selected with noise (no document-level DP).")
    epsilon_per_query: float | None = None
    crawl_limits: bool = Field(False, description="Per-key crawl limits apply: a crawling key gets 429.")


class SiloCard(_Reply):
    """``GET /v1/card``: what a silo publishes about itself for routing."""

    name: str
    description: str
    chunk_count: int = Field(ge=0, description="Chunks indexed (possibly rounded or noised).")
    embedding: EmbeddingSpec
    centroids: Matrix = Field(description="k-means centroids of the silo's embeddings (possibly noised).")
    policy: PolicySummary
    search: SearchMode = Field("dense", description="How the silo ranks: lexical and hybrid use the question's text.")
    protocol: str = PROTOCOL_VERSION


class Problem(BaseModel):
    """The one error shape (RFC 9457 problem details with a stable ``code``)."""

    type: str = "about:blank"
    title: str
    status: int
    code: str
    detail: str
