"""Token-level access to a llama.cpp server: what a DP answer needs to vote token by token.

A DP answer (:mod:`gateway.dp_answer`) asks the model, one token at a time, for its most likely
next tokens after a prompt given as token ids. The OpenAI protocol has no portable way to do
that (prompts are text, top logprobs come without token ids on some servers), so this client
speaks llama.cpp's own endpoints, which the embedded server (``fedrag llm serve``) and any
``llama-server`` expose: ``/apply-template`` (the chat template as text), ``/tokenize``
(special tokens parsed), ``/detokenize`` and ``/completion`` with a token-id prompt, one
predicted token, ``n_probs`` top tokens and the prompt cache on, so each step only decodes
the new token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from federation.errors import Unavailable, UpstreamError
from federation.secrets import Secret

__all__ = ["LlamaCppTokens", "TokenChoice"]


@dataclass(frozen=True)
class TokenChoice:
    """One candidate next token: its id, its text and the model's log probability."""

    id: int
    text: str
    logprob: float


class LlamaCppTokens:
    """Asks a llama.cpp server for next-token candidates.

    Args:
        base_url: the server (``http://127.0.0.1:8080``).
        api_key: sent as a bearer token when the server requires one.
        timeout_s: per request.
        lora: the ``lora`` field sent with every completion (adapter scales), or None.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: Secret | None = None,
        timeout_s: float = 60.0,
        lora: list[dict[str, Any]] | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key.reveal()}"} if api_key is not None else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._lora = lora

    def __repr__(self) -> str:
        return f"LlamaCppTokens({str(self._client.base_url)!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            reply = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the LLM server cannot be reached: {type(exc).__name__}", code="llm_unavailable"
            ) from exc
        if reply.status_code >= 400:
            raise UpstreamError(
                f"the LLM server answered {reply.status_code} to {path}",
                code="llm_error",
                upstream_status=reply.status_code,
            )
        return reply.json()

    async def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The token ids of ``messages`` in the model's chat template, ready for the assistant's reply."""
        prompt = (await self._post("/apply-template", {"messages": list(messages)}))["prompt"]
        return await self.tokenize(prompt)

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens such as ``<|im_end|>`` parsed)."""
        return [int(t) for t in (await self._post("/tokenize", {"content": text, "add_special": False}))["tokens"]]

    async def detokenize(self, ids: Sequence[int]) -> str:
        """The text of ``ids``."""
        return str((await self._post("/detokenize", {"tokens": list(ids)}))["content"])

    async def next_tokens(self, prompt: Sequence[int], top: int) -> list[TokenChoice]:
        """The ``top`` most likely next tokens after ``prompt``, most likely first (greedy: no sampling)."""
        body: dict[str, Any] = {
            "prompt": list(prompt),
            "n_predict": 1,
            "n_probs": top,
            "temperature": 0,
            "cache_prompt": True,
        }
        if self._lora is not None:
            body["lora"] = self._lora
        reply = await self._post("/completion", body)
        try:
            candidates = reply["completion_probabilities"][0]["top_logprobs"]
            return [TokenChoice(int(c["id"]), str(c["token"]), float(c["logprob"])) for c in candidates]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise UpstreamError("the LLM server sent no token probabilities", code="llm_error") from exc
