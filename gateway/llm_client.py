"""Async client for an OpenAI-compatible chat-completions server (vLLM, llama.cpp), over httpx.

Errors are translated where they enter: unreachable -> ``Unavailable`` (``llm_unavailable``), late
-> ``UpstreamTimeout`` (``llm_timeout``), error status -> ``UpstreamError`` (``llm_error``, or
``llm_context_overflow`` for a prompt over the context), not the protocol -> ``llm_invalid_reply``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from federation.errors import Unavailable, UpstreamError, UpstreamTimeout
from federation.secrets import Secret

logger = logging.getLogger(__name__)

# llama.cpp: "request (3031 tokens) exceeds the available context size (2048 tokens)" (exceed_context_size_error);
# vLLM: "This model's maximum context length is 2048 tokens ..." / "... longer than the maximum model length of 2048".
_CHAT = "/v1/chat/completions"
_OVERFLOW = re.compile(r"context[ _](?:size|length|window)|maximum context|exceed_context|maximum model length", re.I)


@dataclass(frozen=True)
class LLMSettings:
    """Where and how to call the chat server.

    Attributes:
        base_url: the server's base URL, e.g. ``http://127.0.0.1:8080`` (a trailing ``/v1`` is accepted).
        model: the model name sent with each request.
        api_key: sent as ``Authorization: Bearer <key>`` when set.
        lora_adapter: the served LoRA adapter that answers (None: the base model). One with an id in
            ``lora_ids`` is selected per request with llama.cpp's ``lora`` field; any other is sent
            instead of ``model`` (vLLM's ``--lora-modules name=path``).
        timeout_s: seconds for a whole non-streamed answer, and between two streamed chunks.
        connect_timeout_s: seconds to open a connection.
        max_tokens: default most tokens generated per answer.
        temperature: default sampling temperature.
        context_tokens: the model's context window, for callers that pack prompts.
        extra_body: server-specific fields sent with every request (a call's own ``extra_body`` wins),
            e.g. llama.cpp's ``{"cache_prompt": False}`` for latency measurements.
        lora_ids: a llama.cpp server's adapters, name -> adapter id (its position in ``--lora``). When
            set, every request states every adapter's scale (1 for the one that answers, 0 for the
            others): llama.cpp reuses a prompt cache built under another adapter for a request
            without a ``lora`` field.
    """

    base_url: str
    model: str
    api_key: Secret | None = None
    lora_adapter: str | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    max_tokens: int = 512
    temperature: float = 0.2
    context_tokens: int | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    lora_ids: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatResult:
    """A whole answer.

    Attributes:
        content: the message content ("" when the server sent none).
        reasoning: the server's separate reasoning field (``reasoning_content`` or ``reasoning``), if any.
        finish_reason: why generation stopped (``stop``, ``length``, ...).
        prompt_tokens: prompt tokens, as the server counted them.
        completion_tokens: generated tokens, as the server counted them.
        model: the model that answered, as the server names it.
    """

    content: str
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str


@dataclass(frozen=True)
class ChatDelta:
    """One streamed piece of an answer (the usage counts come in a piece of their own, at the end)."""

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def _by_id(item: tuple[str, int]) -> int:
    return item[1]


def _status_error(status: int | None, body: bytes | str) -> UpstreamError:
    """The error for an error body in the OpenAI / llama.cpp / vLLM shape (status from the body when None)."""
    message, kind, code = (body if isinstance(body, str) else body.decode("utf-8", "replace"))[:300], "", None
    try:
        data = json.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict):
            message, kind = str(error.get("message", error.get("detail", "")))[:300], str(error.get("type", ""))
            code = _optional_int(error.get("code"))
    except ValueError:
        pass
    status = status or code or 502
    if status in (400, 413, 422) and (_OVERFLOW.search(message) or _OVERFLOW.search(kind)):
        return UpstreamError(f"the prompt does not fit the model's context: {message}", code="llm_context_overflow")
    logger.warning("LLM server answered HTTP %d: %s", status, message)
    detail = f"the LLM server answered HTTP {status}" + (f": {message}" if status < 500 and message else "")
    return UpstreamError(detail, code="llm_error", upstream_status=status)


@contextmanager
def _translate(timeout_s: float) -> Iterator[None]:
    """Map httpx and asyncio failures to the federation's errors."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise Unavailable("the LLM server is not reachable", code="llm_unavailable") from exc
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise UpstreamTimeout(f"the LLM server did not answer within {timeout_s:g} s", code="llm_timeout") from exc
    except httpx.TransportError as exc:
        raise UpstreamError(f"the connection to the LLM server broke ({type(exc).__name__})", code="llm_error") from exc
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UpstreamError("the LLM reply is not valid chat-completions JSON", code="llm_invalid_reply") from exc


def _text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _delta(payload: str) -> ChatDelta | None:
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise TypeError("event is not an object")
    if "error" in data:
        raise _status_error(None, payload)
    choices = data.get("choices") or []
    if not choices:  # the final usage chunk (stream_options.include_usage), or nothing
        usage = data.get("usage") or {}
        prompt, completion = _optional_int(usage.get("prompt_tokens")), _optional_int(usage.get("completion_tokens"))
        if prompt is None and completion is None:
            return None
        return ChatDelta(prompt_tokens=prompt, completion_tokens=completion)
    delta = choices[0].get("delta") or {}
    reasoning = _text(delta.get("reasoning_content") or delta.get("reasoning"))
    content, finish = _text(delta.get("content")), choices[0].get("finish_reason")
    if not content and not reasoning and finish is None:
        return None
    return ChatDelta(content=content, reasoning=reasoning, finish_reason=finish)


class LLMClient:
    """Calls ``/v1/chat/completions`` and ``/v1/models`` of an OpenAI-compatible server.

    Streams send ``Connection: close``: llama.cpp drops a keep-alive connection after a
    stream, so it must not be reused. A request whose pooled connection the server had
    dropped (no response at all) is sent once more.
    """

    def __init__(self, settings: LLMSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        base = settings.base_url.rstrip("/").removesuffix("/v1")
        self._http = httpx.AsyncClient(
            base_url=base,
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=2.0),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self._http.base_url!s}, model={self.model_name!r})"

    @property
    def model_name(self) -> str:
        """The model that answers: the LoRA adapter when set, else the base model."""
        return self.settings.lora_adapter or self.settings.model

    def with_adapter(self, adapter: str | None) -> LLMClient:
        """This client answering with ``adapter`` (None: the base model), sharing its connection pool.

        Close only the original client; closing the pool closes it for both.
        """
        if adapter == self.settings.lora_adapter:
            return self
        view = copy.copy(self)
        view.settings = replace(self.settings, lora_adapter=adapter)
        return view

    def _model_fields(self) -> dict[str, Any]:
        """``model``, and for a llama.cpp server with adapters the ``lora`` scales of every adapter."""
        ids, adapter = self.settings.lora_ids, self.settings.lora_adapter
        if not ids:
            return {"model": self.model_name}
        lora = [{"id": i, "scale": 1.0 if name == adapter else 0.0} for name, i in sorted(ids.items(), key=_by_id)]
        return {"model": self.settings.model if adapter in ids else self.model_name, "lora": lora}

    def _headers(self, *, stream: bool = False) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Connection": "close"} if stream else {"Accept": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key.reveal()}"
        return headers

    def _body(
        self,
        messages: Sequence[Mapping[str, str]],
        stream: bool,
        max_tokens: int | None,
        temperature: float | None,
        extra_body: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            **self.settings.extra_body,
            **(extra_body or {}),
            **self._model_fields(),
            "messages": [dict(m) for m in messages],
            "max_tokens": self.settings.max_tokens if max_tokens is None else max_tokens,
            "temperature": self.settings.temperature if temperature is None else temperature,
            "stream": stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        }

    async def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            return await self._http.send(request, stream=stream)
        except httpx.RemoteProtocolError:  # a pooled connection the server had closed: once more
            return await self._http.send(request, stream=stream)

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = self._http.build_request(method, path, json=body, headers=self._headers())
        async with asyncio.timeout(self.settings.timeout_s):
            response = await self._send(request, stream=False)
        if response.status_code >= 400:
            raise _status_error(response.status_code, response.content)
        return response.json()

    async def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """Ask for a whole answer and return it.

        Args:
            messages: chat messages (``role``, ``content``).
            max_tokens: most tokens to generate (the settings' default when None).
            temperature: sampling temperature (the settings' default when None).
            extra_body: server-specific request fields, e.g. vLLM's ``chat_template_kwargs``.

        Raises:
            Unavailable: the server is not reachable (``llm_unavailable``).
            UpstreamTimeout: no whole answer within ``timeout_s`` (``llm_timeout``).
            UpstreamError: ``llm_error``, ``llm_context_overflow`` or ``llm_invalid_reply``.
        """
        with _translate(self.settings.timeout_s):
            body = self._body(messages, False, max_tokens, temperature, extra_body)
            data = await self._json("POST", _CHAT, body)
            choice = data["choices"][0]
            message, usage = choice["message"], data.get("usage") or {}
            reasoning = _text(message.get("reasoning_content") or message.get("reasoning"))
            return ChatResult(
                content=_text(message.get("content")),
                reasoning=reasoning or None,
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=_optional_int(usage.get("prompt_tokens")),
                completion_tokens=_optional_int(usage.get("completion_tokens")),
                model=str(data.get("model") or self.model_name),
            )

    async def stream(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[ChatDelta, None]:
        """Stream an answer as deltas; arguments and errors as for :meth:`chat`.

        ``timeout_s`` bounds the wait for each server-sent event line. Closing the generator
        (``aclose()``, e.g. once the caller's own client disconnected) closes the HTTP stream
        at once, which makes the server stop generating.

        Yields:
            Deltas with content and/or reasoning text, one with the finish reason, and (when the
            server counts them) a last one with the token counts.
        """
        body = self._body(messages, True, max_tokens, temperature, extra_body)
        request = self._http.build_request("POST", _CHAT, json=body, headers=self._headers(stream=True))
        with _translate(self.settings.timeout_s):
            response = await self._send(request, stream=True)
            try:
                if response.status_code >= 400:
                    raise _status_error(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if line.startswith("error:"):  # llama.cpp's error event
                        raise _status_error(None, line[6:].strip())
                    payload = line[5:].strip() if line.startswith("data:") else ""  # blank, "event:", ": comment"
                    if payload == "[DONE]":
                        return
                    if payload and (delta := _delta(payload)) is not None:
                        yield delta
            finally:
                await response.aclose()

    async def models(self) -> list[str]:
        """The model names the server serves (``GET /v1/models``); errors as for :meth:`chat`."""
        with _translate(self.settings.timeout_s):
            return [str(entry["id"]) for entry in (await self._json("GET", "/v1/models"))["data"]]

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
