"""reStructuredText pages split into sections, with the markup reduced to plain text.

Used by the ``python-docs`` corpus (the Python documentation's reST sources): one document
per section, its id built from the page and the section's anchor (:func:`slug`, as Sphinx
writes anchors), its text from :func:`rst_text`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from silo_node.ingest._formats import clean_title, normalise_text

__all__ = ["rst_sections", "rst_text", "slug"]

_RST_RULE = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}$")
_RST_DIRECTIVE = re.compile(r"\.\.\s+([\w:.-]+)::(?:\s+(.*))?$")
_RST_OPTION = re.compile(r":[\w -]+:(?:\s|$)")
_RST_ROLE = re.compile(r":[\w.+:-]+:`([^`]+)`")
_RST_TITLED = re.compile(r"(\S.*?)\s*<[^<>]*>$", re.DOTALL)
_RST_LINK = re.compile(r"`([^`]+)`__?(?!\w)")
_RST_LITERAL = re.compile(r"``(.+?)``|`([^`]+)`")
# Directives left out with their content, and those whose argument is not text (only their content stays).
_RST_DROPPED = frozenset(
    {
        *("audit-event", "audit-event-table", "codeauthor", "contents", "currentmodule", "default-role", "figure"),
        *("highlight", "image", "include", "index", "limited-api-list", "literalinclude", "meta", "miscnews"),
        *("moduleauthor", "program", "raw", "role", "sectionauthor", "tabularcolumns", "testcleanup", "testsetup"),
        *("toctree",),
    }
)
_RST_CONTENT_ONLY = frozenset(
    {"code", "code-block", "doctest", "glossary", "only", "parsed-literal", "sourcecode", "testcode", "testoutput"}
)
_RST_LABELS = {
    "availability": "Availability:",
    "caution": "Caution:",
    "deprecated": "Deprecated since version",
    "deprecated-removed": "Deprecated since version",
    "impl-detail": "CPython implementation detail:",
    "important": "Important:",
    "note": "Note:",
    "seealso": "See also:",
    "versionadded": "New in version",
    "versionchanged": "Changed in version",
    "warning": "Warning:",
}


def rst_sections(lines: list[str]) -> Iterator[tuple[str, str, list[str]]]:
    """Split a reST page at its section titles: ``(slug, title, body lines)``; text before the first title is left out.

    A title is a line under a rule of one repeated punctuation character at least as long as it: with
    the same rule above it (the title may then be indented), or unindented after a blank line. Slugs
    are unique in the page (a repeated title gets ``-2``, ``-3`` ...), so ids do not depend on which
    sections have text.
    """
    titles: list[tuple[int, int, str]] = []  # (first line of the title, first line of the body, title)
    for i in range(len(lines) - 1):
        line, under = lines[i], lines[i + 1]
        if not line.strip() or len(under) < len(line) or _RST_RULE.match(line) or not _RST_RULE.match(under):
            continue
        over = lines[i - 1] if i > 0 else ""
        if over == under:
            titles.append((i - 1, i + 2, line.strip()))
        elif not over.strip() and not line[0].isspace():
            titles.append((i, i + 2, line))
    seen: dict[str, int] = {}
    for n, (_, start, title) in enumerate(titles):
        end = titles[n + 1][0] if n + 1 < len(titles) else len(lines)
        heading = clean_title(_rst_inline(title))
        anchor = slug(heading)
        seen[anchor] = seen.get(anchor, 0) + 1
        yield (anchor if seen[anchor] == 1 else f"{anchor}-{seen[anchor]}"), heading, lines[start:end]


def slug(heading: str) -> str:
    """A section title as an id fragment, as Sphinx writes anchors: ASCII lower case, words joined by ``-``."""
    ascii_text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-") or "section"


def rst_text(lines: list[str]) -> str:
    """A section body with its markup lightly cleaned.

    Directives keep their argument (a signature, a version) and their content, without options;
    admonitions and version notes are labelled as Sphinx renders them (``Note:``, ``New in version 3.2``);
    comments, link targets and layout directives (``index``, ``toctree`` ...) are left out; roles,
    links and literals are reduced to their text; ``::`` literal-block markers are removed.
    """
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped != ".." and not stripped.startswith(".. "):
            if stripped != "::" and not _RST_RULE.match(stripped):  # Nor a transition (a rule on its own).
                out.append(line[:-1] if line.endswith("::") else line)
            i += 1
            continue
        directive = _RST_DIRECTIVE.match(stripped)
        name = directive.group(1).lower() if directive else ""
        i += 1
        if stripped.startswith(".. ["):  # A footnote or citation: its text stays.
            out.append(indent + stripped[3:])
        elif directive is None or name in _RST_DROPPED:  # A comment, a link target or a layout directive:
            while i < len(lines) and (not lines[i] or lines[i].startswith(indent + " ")):  # left out with its block.
                i += 1
        else:
            head = _rst_directive_head(name, (directive.group(2) or "").strip())
            if head:
                out.append(indent + head)
            while i < len(lines) and lines[i].startswith(indent + " ") and _RST_OPTION.match(lines[i].lstrip()):
                i += 1
    return normalise_text(_rst_inline("\n".join(out)))


def _rst_directive_head(name: str, argument: str) -> str:
    """The line a directive's argument becomes: ``Note: ...``, ``New in version 3.2``, a signature ..."""
    if name in _RST_CONTENT_ONLY:
        return ""
    label = _RST_LABELS.get(name)
    if label is None:
        return argument
    if label.endswith(":"):
        return f"{label} {argument}".strip()
    version, _, rest = argument.partition(" ")
    if name == "deprecated-removed":
        removed, _, rest = rest.partition(" ")
        version = f"{version}, will be removed in version {removed}"
    return f"{label} {version}" + (f": {rest}" if rest else "")


def _rst_inline(text: str) -> str:
    """Roles, links and literals reduced to their text: ``:func:`~os.path.join``` becomes ``join``."""
    text = _RST_ROLE.sub(_role_text, text)
    text = _RST_LINK.sub(_link_text, text)
    text = _RST_LITERAL.sub(lambda match: match.group(1) or match.group(2), text)
    return text.replace("\\ ", "")


def _role_text(match: re.Match[str]) -> str:
    """What a role shows: its title if it has ``title <target>``, else the target (``~a.b`` shows ``b``)."""
    start = match.start()
    if start and (match.string[start - 1].isalnum() or match.string[start - 1] == "_"):
        return match.group(0)  # ``word:x:`y``` is text, not a role.
    content = match.group(1).replace("\\", "")
    titled = _RST_TITLED.match(content)
    if titled:
        return " ".join(titled.group(1).split())
    content = content.lstrip("!")
    return content[1:].rpartition(".")[2] if content.startswith("~") else content


def _link_text(match: re.Match[str]) -> str:
    """What a link shows: ``text`` of ```text <url>`_``, or the reference name of ```name`_``."""
    titled = _RST_TITLED.match(match.group(1))
    return " ".join(titled.group(1).split()) if titled else match.group(1)
