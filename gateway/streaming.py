"""Incremental handling of streamed model output: ``<think>`` reasoning vs the answer."""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Splits streamed text into ``("reasoning", …)`` and ``("content", …)`` pieces.

    Text inside ``<think>…</think>`` is reasoning, the rest is content. Tags may arrive
    split across deltas: a possible tag prefix is held back until the next delta decides.
    """

    def __init__(self) -> None:
        self._inside = False
        self._pending = ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        """Consume a delta; return the pieces that are now certain."""
        self._pending += text
        out: list[tuple[str, str]] = []
        while self._pending:
            tag = CLOSE if self._inside else OPEN
            index = self._pending.find(tag)
            if index >= 0:
                self._emit(out, self._pending[:index])
                self._pending = self._pending[index + len(tag) :]
                self._inside = not self._inside
                continue
            keep = _partial_suffix(self._pending, tag)
            self._emit(out, self._pending[: len(self._pending) - keep])
            self._pending = self._pending[len(self._pending) - keep :]
            break
        return out

    def flush(self) -> list[tuple[str, str]]:
        """End of stream: release whatever is held back."""
        out: list[tuple[str, str]] = []
        self._emit(out, self._pending)
        self._pending = ""
        return out

    def _emit(self, out: list[tuple[str, str]], text: str) -> None:
        if text:
            out.append(("reasoning" if self._inside else "content", text))


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0
