"""Text normalisation and per-format parsing: decoded file text in, ``(title, text)`` out.

Every parser returns the document's title (possibly empty) and its normalised text. Markdown
and reStructuredText stay as source (their markup is light and helps retrieval), minus YAML
front matter and reST section adornment lines; HTML becomes its visible text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from html.parser import HTMLParser

TITLE_MAX_CHARS = 200

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TRAILING_SPACE = re.compile(r"[^\S\n]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{3,}")
_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}[ \t]*$")


def normalise_text(text: str) -> str:
    """Normalise text for indexing.

    NFC; Windows and old Mac line ends become ``LF``; form feeds and vertical tabs become line
    breaks and other control characters (except tab) are dropped; trailing spaces are stripped
    from every line; any run of blank lines collapses to one blank line (a paragraph break);
    leading and trailing blank space is removed.

    Args:
        text: Decoded text.

    Returns:
        The normalised text (empty if ``text`` held nothing visible).
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").replace("\v", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    return _BLANK_RUN.sub("\n\n", text).strip()


def clean_title(title: str) -> str:
    """Collapse whitespace in a title and truncate it to ``TITLE_MAX_CHARS`` characters."""
    title = " ".join(unicodedata.normalize("NFC", title).split())
    return title[:TITLE_MAX_CHARS].rstrip()


def first_line(text: str) -> str:
    """Return the first non-empty line of ``text`` as a title (empty if there is none)."""
    for line in text.split("\n"):
        if line.strip():
            return clean_title(line)
    return ""


def parse_txt(raw: str) -> tuple[str, str]:
    """Plain text: the title is the first non-empty line."""
    text = normalise_text(raw)
    return first_line(text), text


def parse_markdown(raw: str) -> tuple[str, str]:
    """Markdown: the title is front matter ``title:``, else the first ``# `` heading, else the first line."""
    text = normalise_text(raw)
    title, text = _strip_front_matter(text)
    if not title:
        title = _markdown_h1(text)
    return title or first_line(text), text


def _strip_front_matter(text: str) -> tuple[str, str]:
    """Remove a leading YAML front matter block, returning its ``title:`` value and the rest."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return "", text
    for end in range(1, min(len(lines), 200)):
        if lines[end].strip() in ("---", "..."):
            title = ""
            for line in lines[1:end]:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == "title":
                    title = clean_title(value.strip().strip("'\""))
            return title, "\n".join(lines[end + 1 :]).strip()
    return "", text


def _markdown_h1(text: str) -> str:
    """Return the first ATX level-1 heading outside fenced code blocks."""
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence and (match := _ATX_H1.match(line)):
            return clean_title(match.group(1))
    return ""


def parse_rst(raw: str) -> tuple[str, str]:
    """reStructuredText: the title is the first section title; adornment lines leave the text."""
    lines = normalise_text(raw).split("\n")
    title = ""
    drop: set[int] = set()
    for i, line in enumerate(lines):
        if not _RST_ADORNMENT.match(line) or i in drop:
            continue
        above = lines[i - 1] if i > 0 else ""
        below = lines[i + 1] if i + 1 < len(lines) else ""
        if above.strip() and not _RST_ADORNMENT.match(above) and i - 1 not in drop:
            # Underline (possibly closing an overline): "Title\n=====".
            drop.add(i)
            title = title or clean_title(above)
        elif below.strip() and i + 2 < len(lines) and _is_closing_adornment(lines[i + 2], line):
            # Overline and underline: "=====\nTitle\n=====".
            drop.update((i, i + 2))
            title = title or clean_title(below)
    text = normalise_text("\n".join(line for i, line in enumerate(lines) if i not in drop))
    return title or first_line(text), text


def _is_closing_adornment(line: str, overline: str) -> bool:
    return bool(_RST_ADORNMENT.match(line)) and line.strip()[:1] == overline.strip()[:1]


_BLOCK_TAGS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div"),
        *("dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6"),
        *("header", "hgroup", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table"),
        *("tbody", "tfoot", "thead", "ul"),
    }
)
_SKIP_TAGS = frozenset({"script", "style", "template", "noscript", "svg", "math"})
_CELL_TAGS = frozenset({"td", "th"})
_VOID_TAGS = frozenset({"br", "hr", "img", "input", "meta", "link", "wbr", "area", "base", "col", "embed", "source"})


class _VisibleText(HTMLParser):
    """Collect the visible text of an HTML page, its ``<title>`` and its first ``<h1>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.h1_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False
        self._in_h1 = False
        self._h1_done = False
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth += 1
        elif self._skip_depth:
            return
        elif tag == "title":
            self._in_title = True
        elif tag in ("br", "tr"):
            self.parts.append("\n")
        elif tag in _CELL_TAGS:
            self.parts.append(" ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag == "pre":
                self._pre_depth += 1
            if tag == "h1" and not self._h1_done:
                self._in_h1 = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS or tag == "title":
            return  # <svg/> and friends: nothing inside, nothing to skip.
        self.handle_starttag(tag, attrs)
        if tag not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif self._skip_depth:
            return
        elif tag == "title":
            self._in_title = False
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)
            if tag == "h1" and self._in_h1:
                self._in_h1 = False
                self._h1_done = bool("".join(self.h1_parts).strip())

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._in_title:
            self.title_parts.append(data)
            return
        if self._in_h1:
            self.h1_parts.append(data)
        self.parts.append(data if self._pre_depth else re.sub(r"\s+", " ", data))


def parse_html(raw: str) -> tuple[str, str]:
    """HTML: visible text only; block elements become paragraph breaks; title from ``<title>`` or ``<h1>``."""
    parser = _VisibleText()
    parser.feed(raw)
    parser.close()
    lines = (line.strip() for line in "".join(parser.parts).split("\n"))
    text = normalise_text("\n".join(lines))
    title = clean_title("".join(parser.title_parts)) or clean_title("".join(parser.h1_parts))
    return title or first_line(text), text


PARSERS: dict[str, tuple[str, Callable[[str], tuple[str, str]]]] = {
    ".txt": ("txt", parse_txt),
    ".md": ("md", parse_markdown),
    ".markdown": ("md", parse_markdown),
    ".rst": ("rst", parse_rst),
    ".html": ("html", parse_html),
    ".htm": ("html", parse_html),
}
"""File suffix -> (format name recorded in metadata, parser)."""
