"""A conversation's last question, made searchable on its own (``conversation.condense``).

A follow-up such as "and what causes it?" retrieves nothing useful alone. With ``llm`` the
LLM rewrites it as a standalone question from the recent messages (a short, greedy call
under ``condense_timeout_s``); when the LLM is slow, down, or its rewrite is unusable, the
cheap fallback is ``history``: the recent user turns joined, the last one last. ``off``
retrieves for the last message alone. The trace shows which one was used and why.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from federation.config import ConversationSettings
from federation.errors import FedragError
from gateway.llm_client import LLMClient
from gateway.protocol import ChatMessage

logger = logging.getLogger(__name__)

QuestionFrom = Literal["request", "last_message", "llm", "history"]
_TURN_CHARS = 600
_MAX_QUESTION_CHARS = 400
_ROLE = re.compile(r"^\s*(user|assistant|system)\s*:", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(standalone question|question|rewritten question)\s*:\s*", re.IGNORECASE)
_SYSTEM = (
    "Rewrite the user's last question so that it can be understood without the conversation: "
    "replace pronouns and references with what they refer to. Reply with the rewritten question only."
)


@dataclass(frozen=True)
class Standalone:
    """What retrieval searches for, and where it came from.

    Attributes:
        question: the text retrieval embeds.
        origin: ``request`` (a single question), ``last_message`` (a conversation of one
            question, or ``condense = off``), ``llm`` (the LLM's rewrite) or ``history``
            (the recent user turns joined).
        note: why the fallback was used, when it was.
    """

    question: str
    origin: QuestionFrom
    note: str = ""


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]


def history_question(user_turns: Sequence[str], *, turns: int = 3) -> str:
    """The recent user turns joined, oldest first (the last one, the question, last)."""
    return " ".join(_clip(t, _TURN_CHARS) for t in user_turns[-turns:])


def _rewrite_usable(text: str, last: str, earlier: Sequence[str]) -> str | None:
    """The LLM's rewrite cleaned up, or None when it is not one plausible question.

    Small models often answer, or repeat an earlier message, instead of rewriting: a rewrite
    must be one line that ends with a question mark, no longer than twice the question (or
    400 characters), with no role prefix, and not a copy of an earlier message.
    """
    text = _PREFIX.sub("", text.strip().strip('"').strip()).strip().strip('"')
    if not text or "\n" in text or len(text) > max(_MAX_QUESTION_CHARS, 2 * len(last)) or not text.endswith("?"):
        return None
    if _ROLE.match(text) or text.casefold() in {e.strip().casefold() for e in earlier}:
        return None
    return text


async def standalone_question(
    messages: Sequence[ChatMessage], llm: LLMClient | None, settings: ConversationSettings
) -> Standalone:
    """The question retrieval should search for, given a chat's messages (at least one user message)."""
    users = [m.text().strip() for m in messages if m.role == "user" and m.text().strip()]
    last = users[-1]
    earlier = [m for m in messages if m.role in ("user", "assistant") and m.text().strip()]
    if len(earlier) <= 1 or settings.condense == "off":
        return Standalone(last, "last_message")
    if settings.condense == "history" or llm is None:
        return Standalone(history_question(users), "history")
    history = earlier[-settings.history_messages - 1 : -1]
    transcript = "\n".join(f"{m.role}: {_clip(m.text(), _TURN_CHARS)}" for m in history)
    prompt = [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": f"Conversation:\n{transcript}\n\nLast question: {last}"},
    ]
    try:
        reply = await asyncio.wait_for(llm.chat(prompt, max_tokens=64, temperature=0.0), settings.condense_timeout_s)
    except TimeoutError:
        note = f"the LLM did not rewrite it within {settings.condense_timeout_s:g} s"
    except FedragError as exc:
        note = f"the LLM could not rewrite it ({exc.code})"
    else:
        if rewritten := _rewrite_usable(reply.content, last, [m.text() for m in history]):
            return Standalone(rewritten, "llm")
        note = "the LLM's rewrite was not a standalone question"
    logger.info("conversation: %s; searching the recent user turns", note)
    return Standalone(history_question(users), "history", note)
