"""Incremental handling of streamed model output: ``<think>`` reasoning vs the answer, and JSON replies."""

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


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class JsonFieldStreamer:
    r"""Streams the string fields of a JSON object reply as they are generated.

    A structured reply (``{"reasoning": "...", "answer": "...", "citations": [1]}``) arrives
    token by token; this reads it incrementally, without waiting for the object to close, and
    returns the decoded text of the streamed string fields as ``(kind, text)`` pieces, e.g.
    ``("reasoning", …)`` for ``reasoning`` and ``("content", …)`` for ``answer``. Escapes
    (``\n``, ``\"``, ``\uXXXX`` with surrogate pairs) may be split across deltas. Nested
    values are skipped; :meth:`field` gives every top-level string field decoded so far,
    complete or not, so a reply cut short (a loop stopped, ``max_tokens`` reached) can still
    be read.

    Args:
        streamed: top-level field name -> the kind its text is returned as.
    """

    def __init__(self, streamed: dict[str, str]) -> None:
        self._streamed = streamed
        self._fields: dict[str, list[str]] = {}
        self._depth = 0
        self._expect_key = False
        self._in_string = False
        self._is_key = False
        self._key = ""
        self._key_chars: list[str] = []
        self._escape: str | None = None  # None, "" after a backslash, or "u" and the hex digits so far
        self._high: str | None = None  # a high surrogate waiting for its low half

    def field(self, name: str) -> str | None:
        """The decoded text of top-level string field ``name`` so far (None: not started)."""
        chars = self._fields.get(name)
        return None if chars is None else "".join(chars)

    def feed(self, text: str) -> list[tuple[str, str]]:
        """Consume a delta of raw JSON; return the decoded text of streamed fields in it."""
        out: list[tuple[str, str]] = []
        for char in text:
            if self._in_string:
                self._string_char(char, out)
            elif char == '"':
                self._in_string, self._is_key = True, self._expect_key and self._depth == 1
                self._key_chars = []
                if not self._is_key and self._depth == 1:
                    self._fields[self._key] = []
            elif char in "{[":
                self._depth += 1
                self._expect_key = char == "{" and self._depth == 1
            elif char in "}]":
                self._depth -= 1
            elif char == "," and self._depth == 1:
                self._expect_key = True
        pieces: list[tuple[str, str]] = []
        for kind, piece in out:  # join consecutive characters of one kind
            if pieces and pieces[-1][0] == kind:
                pieces[-1] = (kind, pieces[-1][1] + piece)
            else:
                pieces.append((kind, piece))
        return pieces

    def _string_char(self, char: str, out: list[tuple[str, str]]) -> None:
        if self._escape is not None:
            if self._escape == "":
                if char == "u":
                    self._escape = "u"
                else:
                    self._escape = None
                    self._decoded(_ESCAPES.get(char, char), out)
                return
            self._escape += char
            if len(self._escape) == 5:
                digits, self._escape = self._escape[1:], None
                self._unicode(int(digits, 16) if _is_hex(digits) else 0xFFFD, out)
            return
        if char == "\\":
            self._escape = ""
        elif char == '"':
            self._in_string = False
            self._lone_high(out)
            if self._is_key:
                self._key, self._expect_key = "".join(self._key_chars), False
        else:
            self._decoded(char, out)

    def _unicode(self, code: int, out: list[tuple[str, str]]) -> None:
        if 0xDC00 <= code < 0xE000 and self._high is not None:
            high, self._high = self._high, None
            self._append(chr(0x10000 + ((ord(high) - 0xD800) << 10) + (code - 0xDC00)), out)
            return
        self._lone_high(out)
        if 0xD800 <= code < 0xDC00:
            self._high = chr(code)
        else:
            self._append("\ufffd" if 0xD800 <= code < 0xE000 else chr(code), out)

    def _decoded(self, char: str, out: list[tuple[str, str]]) -> None:
        self._lone_high(out)
        self._append(char, out)

    def _lone_high(self, out: list[tuple[str, str]]) -> None:
        if self._high is not None:  # a lone surrogate is not text
            self._high = None
            self._append("\ufffd", out)

    def _append(self, char: str, out: list[tuple[str, str]]) -> None:
        if self._is_key:
            self._key_chars.append(char)
        elif self._depth == 1:
            self._fields[self._key].append(char)
            if kind := self._streamed.get(self._key):
                out.append((kind, char))


def _is_hex(digits: str) -> bool:
    return len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits)
