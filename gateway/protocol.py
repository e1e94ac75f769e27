"""Wire models of the gateway's HTTP API: ``/v1/ask`` and the OpenAI-compatible chat completions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_CHOICES = 10


class SiloTrace(BaseModel):
    """What happened with one silo for one question."""

    silo: str
    routed: bool = Field(description="Whether the router chose this silo.")
    route_score: float | None = None
    route_reason: str = ""
    outcome: Literal["ok", "timeout", "unavailable", "refused", "invalid", "circuit_open", "not_asked"] = "not_asked"
    detail: str = ""
    latency_ms: float = 0.0
    passages: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class Trace(BaseModel):
    """The per-question routing and timing trace."""

    request_id: str
    router: str
    merger: str
    silos: list[SiloTrace]
    timings_ms: dict[str, float] = Field(description="embed, route, search, aggregate, generate, total.")
    partial: bool = Field(description="True when a routed silo failed or was late.")
    passages_merged: int = 0
    duplicates_removed: int = 0
    passages_in_prompt: int = 0
    bytes_exchanged: int = 0
    llm_tokens: dict[str, int | None] = Field(default_factory=dict)


class Citation(BaseModel):
    """A numbered source of the answer."""

    number: int
    silo: str = Field(description="Silo name, or a per-answer pseudonym when the federation hides names.")
    doc_id: str
    chunk_id: str
    title: str
    text: str
    score: float
    cited: bool = Field(description="Whether the answer cites it as [n].")


class AskRequest(BaseModel):
    """``POST /v1/ask``."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="The question.")
    choices: list[str] | None = Field(
        None, max_length=MAX_CHOICES, description="Options of a multiple-choice question."
    )
    allow_llm_only: bool = Field(False, description="Answer from the model alone when no silo can be searched.")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be blank")
        return value

    @field_validator("choices")
    @classmethod
    def _choices(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or any(not c.strip() or len(c) > 1000 for c in value)):
            raise ValueError("choices need 2-10 non-empty options of at most 1000 characters")
        return value


class AskResponse(BaseModel):
    """The answer with its reasoning, citations and trace."""

    id: str
    model: str
    answer: str
    reasoning: str
    citations: list[Citation]
    invalid_citations: list[int] = Field(default_factory=list, description="[n] the model cited that are not sources.")
    choice: str | None = None
    choice_parsed: bool | None = Field(None, description="Multiple choice: whether one option could be read.")
    partial: bool
    retrieved: bool = Field(description="False when no passage could be retrieved.")
    trace: Trace


class ChatMessage(BaseModel):
    """One chat message (text content, or a list of text parts)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` (the OpenAI protocol; unknown sampling options are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32_768)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int = Field(1, ge=1, le=1, description="Only one choice is supported.")

    @field_validator("messages")
    @classmethod
    def _has_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text().strip() for m in value):
            raise ValueError("messages need at least one non-empty user message")
        return value

    def question(self) -> str:
        """The last user message: what retrieval searches for."""
        return next(m.text() for m in reversed(self.messages) if m.role == "user" and m.text().strip())
