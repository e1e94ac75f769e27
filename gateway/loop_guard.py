"""Detection of degenerate repetition in generated text, while it streams.

Small models fall into loops ("The answer is: The answer is: ..."; the same JSON block
nested again and again). Sampling penalties make loops rarer; this guard makes them
harmless: it watches the text as it is generated, and once the same run of words repeats
(back to back, or the same long n-gram again and again) it reports a :class:`Loop` whose
``cut`` keeps the text up to the end of the first copy. The caller stops generation there.

Streaming callers hold text back: :meth:`RepetitionGuard.feed` releases only what lies more
than ``holdback`` characters behind the newest text, so a loop caught within that distance
never reaches the client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Loop:
    """A detected repetition.

    Attributes:
        cut: index in the text where it should end (after the first copy of the repeated part).
        unit: the repeated words, as text.
        repeats: how many copies were seen.
    """

    cut: int
    unit: str
    repeats: int


@dataclass(frozen=True)
class LoopRules:
    """When repetition counts as a loop.

    Attributes:
        min_repeats: copies of a back-to-back repeated run of words that make a loop.
        min_loop_words: words the repeated part must span beyond its first copy (so that
            "very very" or a repeated short phrase is not a loop, but nine copies of one word are).
        max_unit_words: longest repeated run of words looked for.
        ngrams: loops that are not back to back: (n, occurrences) pairs; a run of n words
            seen that many times (not overlapping) is a loop. The default catches a 10-word
            phrase said three times, or a 16-word one said twice. Text inside ````` code
            fences is left to the back-to-back rule: code repeats lines legitimately.
        min_ngram_chars: shortest repeated n-gram, in characters, that counts (a list of
            numbers in an example is not a loop).
    """

    min_repeats: int = 3
    min_loop_words: int = 8
    max_unit_words: int = 60
    ngrams: tuple[tuple[int, int], ...] = ((10, 3), (16, 2))
    min_ngram_chars: int = 40


def find_loop(text: str, rules: LoopRules | None = None) -> Loop | None:
    """The first loop in ``text``, or None.

    Checks every prefix ending at a word, as a stream would be checked; words are compared
    case-insensitively with whitespace ignored (so indentation that grows with each copy of
    a nested block does not hide it).
    """
    guard = RepetitionGuard(rules=rules)
    guard.feed(text)
    guard.finish()
    return guard.loop


class RepetitionGuard:
    """Watches streamed text for loops; see the module docstring.

    Args:
        rules: what counts as a loop.
        holdback: characters held back from :meth:`feed`'s output until they are known not
            to be part of a loop (0: release everything at once).
    """

    def __init__(self, *, rules: LoopRules | None = None, holdback: int = 0) -> None:
        self.rules = rules or LoopRules()
        self.holdback = holdback
        self.loop: Loop | None = None
        self._text = ""
        self._released = 0
        self._words: list[str] = []
        self._ends: list[int] = []  # end offset of each word in _text
        self._starts: list[int] = []
        self._ngrams: dict[tuple[str, ...], list[int]] = {}  # n-gram -> where its copies start
        self._in_code: list[bool] = []  # per word: inside a code fence

    @property
    def text(self) -> str:
        """The text so far, cut at the loop once one is found."""
        return self._text if self.loop is None else self._text[: self.loop.cut]

    def feed(self, delta: str) -> str:
        """Add generated text; return the text that may be released now ("" once a loop is found)."""
        if self.loop is not None:
            return ""
        self._text += delta
        # Words end where whitespace follows; the last word may still grow.
        for match in _WORD.finditer(self._text, self._ends[-1] if self._ends else 0):
            if match.end() == len(self._text):
                break
            self._add_word(match)
            if self.loop is not None:
                return self._release(self.loop.cut)
        return self._release(max(self._released, len(self._text) - self.holdback))

    def finish(self) -> str:
        """End of generation: check the last word and return what is still held back."""
        if self.loop is None:
            start = self._ends[-1] if self._ends else 0
            for match in _WORD.finditer(self._text, start):
                self._add_word(match)
        end = self.loop.cut if self.loop is not None else len(self._text)
        return self._release(end)

    def _release(self, end: int) -> str:
        if end <= self._released:
            return ""
        piece, self._released = self._text[self._released : end], end
        return piece

    def _add_word(self, match: re.Match[str]) -> None:
        word = match.group()
        inside = self._in_code[-1] if self._in_code else False
        fenced = inside or "```" in word
        if word.count("```") % 2:
            inside = not inside
        self._in_code.append(inside or fenced)
        self._words.append(word.casefold())
        self._starts.append(match.start())
        self._ends.append(match.end())
        self.loop = self._periodic_tail() or self._repeated_ngram()

    def _periodic_tail(self) -> Loop | None:
        """Back-to-back copies of a run of words at the end of the text."""
        words, rules = self._words, self.rules
        n = len(words)
        for period in range(1, min(rules.max_unit_words, n // rules.min_repeats) + 1):
            needed = max(period * (rules.min_repeats - 1), rules.min_loop_words)
            if n < needed + period:
                break
            if all(words[n - 1 - i] == words[n - 1 - i - period] for i in range(needed)):
                first = n - needed - period  # the first copy starts here (at least)
                while first > 0 and words[first - 1] == words[first - 1 + period]:
                    first -= 1
                cut = self._ends[first + period - 1]
                repeats = (n - first) // period
                unit = self._text[self._starts[first] : cut]
                return Loop(cut=cut, unit=unit, repeats=repeats)
        return None

    def _repeated_ngram(self) -> Loop | None:
        """One long n-gram occurring again and again, not necessarily back to back."""
        end = len(self._words)
        for size, repeats in self.rules.ngrams:
            if end < size or any(self._in_code[end - size : end]):
                continue
            if self._ends[end - 1] - self._starts[end - size] < self.rules.min_ngram_chars:
                continue
            gram = tuple(self._words[end - size : end])
            starts = self._ngrams.setdefault(gram, [])
            if starts and end - size - starts[-1] < size:  # overlapping copies are the periodic case
                continue
            starts.append(end - size)
            if len(starts) >= repeats:
                cut = self._starts[starts[1]]  # keep everything before the second copy
                unit = self._text[self._starts[starts[0]] : self._ends[starts[0] + size - 1]]
                return Loop(cut=len(self._text[:cut].rstrip()), unit=unit, repeats=len(starts))
        return None
