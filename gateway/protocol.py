"""Wire models of the gateway's HTTP API: ``/v1/ask`` and the OpenAI-compatible chat completions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from federation.protocol import CleanText

MAX_CHOICES = 10
MAX_MODEL_NAME_CHARS = 256
MAX_MESSAGE_CHARS = 100_000
MAX_CONTENT_PARTS = 64


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


class GenerationTrace(BaseModel):
    """How the answer was generated."""

    format: str = Field(description="structured (JSON schema), free (text), or none (no LLM call).")
    finish_reason: Literal["stop", "length", "repetition"] = Field(
        description="Why generation stopped: repetition when the loop guard stopped a loop."
    )
    loop_detected: bool = Field(description="Whether the loop guard caught a loop (in the reasoning or the answer).")
    loop_field: str | None = Field(None, description="Where the loop was: reasoning or answer.")
    well_formed: bool = Field(description="Whether the reply had the asked form (complete JSON; an answer).")
    best_score: float | None = Field(None, description="The best passage's retrieval score.")
    abstain_below: float | None = Field(None, description="The abstention threshold on best_score (None: off).")


class Trace(BaseModel):
    """The per-question routing and timing trace."""

    request_id: str
    router: str
    merger: str
    silos: list[SiloTrace]
    timings_ms: dict[str, float] = Field(description="embed, route, search, aggregate, generate, total.")
    partial: bool = Field(
        description="True when a silo the router chose failed, was late, or was skipped (circuit open, budget)."
    )
    partial_reasons: list[str] = Field(
        default_factory=list, description="Why it is partial, per silo (empty when silo names are hidden)."
    )
    question: str = Field("", description="What retrieval searched for (a follow-up: the standalone question).")
    question_from: Literal["request", "last_message", "llm", "history"] = Field(
        "request",
        description="request: the question as sent; last_message: the chat's last user message; llm: the LLM's "
        "standalone rewrite of a follow-up; history: the recent user turns joined (the fallback).",
    )
    question_note: str = Field("", description="Why the fallback was used, when it was.")
    passages_merged: int = 0
    duplicates_removed: int = 0
    passages_in_prompt: int = 0
    bytes_exchanged: int = 0
    llm_tokens: dict[str, int | None] = Field(default_factory=dict)
    generation: GenerationTrace | None = None


class Citation(BaseModel):
    """A numbered source of the answer."""

    number: int
    silo: str = Field(description="Silo name, or a per-answer pseudonym when the federation hides names.")
    doc_id: str
    chunk_id: str
    title: str
    text: str
    score: float
    cited: bool = Field(description="Whether the model cites it.")
    added: bool = Field(
        False, description="Not cited by the model: the gateway's grounding check attached it to a claim."
    )


class Claim(BaseModel):
    """One claim (sentence) of the answer, checked against the sources it cites."""

    text: str
    citations: list[int] = Field(description="The sources it cites (or was given by the gateway, when added).")
    supported: bool = Field(description="Whether a cited source supports it (encoder similarity over the threshold).")
    support: float = Field(description="Best similarity of the claim and its sources (0-1).")
    added: bool = Field(False, description="Its citation was added by the gateway, not written by the model.")


class AskRequest(BaseModel):
    """``POST /v1/ask``."""

    model_config = ConfigDict(extra="forbid")

    question: CleanText = Field(min_length=1, description="The question.")
    choices: list[CleanText] | None = Field(
        None, max_length=MAX_CHOICES, description="Options of a multiple-choice question."
    )
    allow_llm_only: bool = Field(False, description="Answer from the model alone when no silo can be searched.")
    model: CleanText | None = Field(
        None,
        min_length=1,
        max_length=MAX_MODEL_NAME_CHARS,
        description="The model to answer with (GET /v1/models); the gateway's default when None.",
    )

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


class PrivacyReport(BaseModel):
    """What a DP answer (model ``fedrag-dp``) cost, per silo document."""

    epsilon: float = Field(description="The answer's guarantee: epsilon-DP for each document of every silo.")
    paid_tokens: int = Field(description="Tokens that used the passages (the rest came from the model alone).")
    voters: int = Field(description="Voters, each reading its own shard of the documents.")
    documents_read: int = Field(description="Documents the voters read, each charged epsilon for life.")
    documents_left_out: int = Field(description="Documents left out because their lifetime budget is spent.")
    document_budget: float = Field(description="The lifetime epsilon of each document.")


class AskResponse(BaseModel):
    """The answer with its reasoning, citations and trace."""

    id: str
    model: str
    answer: str
    reasoning: str
    citations: list[Citation]
    invalid_citations: list[int] = Field(default_factory=list, description="[n] the model cited that are not sources.")
    claims: list[Claim] = Field(default_factory=list, description="The answer's claims, checked against sources.")
    grounded: bool | None = Field(
        None,
        description="The model cited a source and at least half of the claims are supported "
        "(None: nothing retrieved, or the gateway abstained).",
    )
    abstained: bool = Field(False, description="The best passage was too weak: the sources do not contain the answer.")
    finish_reason: Literal["stop", "length", "repetition"] = Field(
        "stop", description="stop, length (max_tokens reached) or repetition (a loop was stopped)."
    )
    choice: str | None = None
    choice_parsed: bool | None = Field(None, description="Multiple choice: whether one option could be read.")
    partial: bool
    retrieved: bool = Field(description="False when no passage could be retrieved.")
    privacy: PrivacyReport | None = Field(None, description="A DP answer's cost (None: not a DP answer).")
    trace: Trace


class ContentPart(BaseModel):
    """One part of a message's content; only ``text`` parts are read."""

    model_config = ConfigDict(extra="allow")

    type: CleanText = Field(max_length=64)
    text: CleanText | None = Field(None, max_length=MAX_MESSAGE_CHARS)


class ChatMessage(BaseModel):
    """One chat message (text content, or a list of text parts)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: (
        Annotated[CleanText, Field(max_length=MAX_MESSAGE_CHARS)]
        | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)]
        | None
    ) = None

    def text(self) -> str:
        """The message's text."""
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    """``stream_options`` of a streamed chat completion."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = Field(False, description="Send a last chunk with the token usage (and no choices).")


def last_user_message(messages: list[ChatMessage]) -> str:
    """The text of the last non-empty user message (the question of a chat)."""
    return next(m.text() for m in reversed(messages) if m.role == "user" and m.text().strip())


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` (the OpenAI protocol; unknown sampling options are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: CleanText = Field(min_length=1, max_length=MAX_MODEL_NAME_CHARS)
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32_768)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int = Field(1, ge=1, le=128, description="Only one choice is supported (n > 1 is a 400).")
    stream_options: StreamOptions | None = None
    tools: list[Any] | None = Field(None, description="Not supported: a request with tools is a 400.")
    tool_choice: Any = Field(None, description="Not supported (400).")
    functions: list[Any] | None = Field(None, description="Not supported (400).")

    def unsupported(self) -> str | None:
        """Why the gateway cannot honour this request as OpenAI would (None: it can)."""
        if self.n > 1:
            return "n > 1 is not supported: the gateway returns one grounded answer per request"
        if self.tools or self.functions or self.tool_choice not in (None, "none"):
            return "tools and function calling are not supported: the gateway answers from the federation's sources"
        return None

    @field_validator("messages")
    @classmethod
    def _has_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text().strip() for m in value):
            raise ValueError("messages need at least one non-empty user message")
        return value

    def question(self) -> str:
        """The last user message: what retrieval searches for."""
        return last_user_message(self.messages)


class RetrieveRequest(BaseModel):
    """``POST /v1/retrieve``: a question, or a conversation whose last user message is the question."""

    model_config = ConfigDict(extra="forbid")

    question: CleanText | None = Field(None, min_length=1, description="The question (or give messages).")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1, max_length=200, description="A conversation (OpenAI messages); a follow-up is condensed."
    )
    k: int | None = Field(None, ge=1, le=100, description="Passages returned (the gateway's k when None).")

    @model_validator(mode="after")
    def _one_question(self) -> RetrieveRequest:
        if (self.question is None) == (self.messages is None):
            raise ValueError("give either question or messages")
        if self.question is not None and not self.question.strip():
            raise ValueError("question must not be blank")
        if self.messages is not None and not any(m.role == "user" and m.text().strip() for m in self.messages):
            raise ValueError("messages need at least one non-empty user message")
        return self

    def last_question(self) -> str:
        """The question as the client sent it (the last user message of a conversation)."""
        if self.question is not None:
            return self.question
        assert self.messages is not None
        return last_user_message(self.messages)


class RetrievedPassage(BaseModel):
    """One merged, released passage, numbered by rank."""

    number: int
    silo: str = Field(description="Silo name, or a per-request pseudonym when the federation hides names.")
    doc_id: str
    chunk_id: str
    title: str
    text: str
    score: float = Field(description="The silo's similarity score.")


class RetrieveResponse(BaseModel):
    """The passages the federation releases for a question, with the routing trace (no LLM call)."""

    id: str
    question: str = Field(description="What was searched for (a follow-up: the standalone question).")
    passages: list[RetrievedPassage]
    partial: bool
    retrieved: bool = Field(description="False when no passage could be retrieved.")
    privacy: PrivacyReport | None = Field(None, description="A DP answer's cost (None: not a DP answer).")
    trace: Trace
