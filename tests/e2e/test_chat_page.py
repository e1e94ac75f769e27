"""The chat page in a real headless Chromium: grounded answers claim by claim, badges, sources, escaping.

The page is the gateway's own ``gateway/static/index.html``, served as the gateway serves it at ``/``;
``/v1/ask`` is a loopback fake at the transport seam that answers fixed JSON in the ``AskResponse`` shape,
so the test checks the page and not the pipeline behind it.
"""

from __future__ import annotations

import copy
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from federation.services import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-color-profile=srgb",
]
API_KEY = "fr-test-key"
XSS = "<img src=x onerror=alert(1)>"
UNSUPPORTED_TITLE = "not supported by the cited source"

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install chromium; deploy/install-debian-data.sh does it)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


def _source(number: int, text: str, *, cited: bool = False, added: bool = False, title: str = "") -> dict[str, Any]:
    return {
        "number": number,
        "silo": "hospital-a" if number % 2 else "wiki",
        "doc_id": f"doc-{number}",
        "chunk_id": f"doc-{number}:0",
        "title": title or f"Source {number}",
        "text": text,
        "score": 0.9 - number / 10,
        "cited": cited,
        "added": added,
    }


def _claim(text: str, citations: list[int], *, supported: bool, support: float, added: bool = False) -> dict[str, Any]:
    return {"text": text, "citations": citations, "supported": supported, "support": support, "added": added}


GROUNDED_ANSWER: dict[str, Any] = {
    "answer": "Metformin is the first-line drug for type 2 diabetes [1]. It cures type 1 diabetes [2]. "
    "It lowers hepatic glucose output.",
    "reasoning": "Source 1 names metformin as first-line therapy.",
    "citations": [
        _source(1, "Metformin is the first-line medication for type 2 diabetes.", cited=True, title="Metformin"),
        _source(2, "Type 1 diabetes needs insulin from diagnosis.", cited=True, title="Type 1 diabetes"),
        _source(3, "Metformin decreases hepatic glucose production.", added=True, title="Metformin pharmacology"),
        _source(4, f"An uncited passage with markup {XSS} in it.", title="Unrelated"),
    ],
    "claims": [
        _claim("Metformin is the first-line drug for type 2 diabetes [1].", [1], supported=True, support=0.82),
        _claim("It cures type 1 diabetes [2].", [2], supported=False, support=0.12),
        _claim("It lowers hepatic glucose output.", [3], supported=True, support=0.71, added=True),
    ],
    "grounded": False,
    "abstained": False,
    "finish_reason": "stop",
    "partial": True,
    "retrieved": True,
    "choice": None,
    "choice_parsed": False,
    "invalid_citations": [],
    "trace": {
        "request_id": "req-1",
        "router": "centroid",
        "merger": "rrf",
        "silos": [
            {
                "silo": "hospital-a",
                "routed": True,
                "route_reason": "top-2",
                "outcome": "ok",
                "detail": "",
                "latency_ms": 12.3,
                "passages": 2,
            },
            {
                "silo": "wiki",
                "routed": True,
                "route_reason": "top-2",
                "outcome": "timeout",
                "detail": "after 2.0 s",
                "latency_ms": 2000.0,
                "passages": 0,
            },
        ],
        "timings_ms": {"total": 2100.0},
        "partial": True,
        "generation": {
            "format": "structured",
            "finish_reason": "stop",
            "loop_detected": False,
            "well_formed": True,
            "best_score": 0.8,
            "abstain_below": 0.3,
        },
    },
}


def _variant(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(GROUNDED_ANSWER)
    body.update(changes)
    return body


def _legacy() -> dict[str, Any]:
    """What a gateway from before grounding sends: no claims, grounding, finish reason or added flags."""
    body = copy.deepcopy(GROUNDED_ANSWER)
    for field in ("claims", "grounded", "abstained", "finish_reason"):
        del body[field]
    del body["trace"]["generation"]
    for source in body["citations"]:
        del source["added"]
    return body


# The fake /v1/ask answers by question, so one server serves every case.
ANSWERS: dict[str, dict[str, Any]] = {
    "ungrounded": GROUNDED_ANSWER,
    "grounded": _variant(grounded=True),
    "abstained": _variant(
        answer="The sources do not contain the answer.", claims=[], grounded=None, abstained=True, reasoning=""
    ),
    "repetition": _variant(finish_reason="repetition"),
    "legacy": _legacy(),
}


async def _chat_page(request: Request) -> Response:
    # As gateway/api/info.py serves it: the packaged file, read per request.
    return HTMLResponse(files("gateway").joinpath("static/index.html").read_text(encoding="utf-8"))


async def _ask(request: Request) -> Response:
    if request.headers.get("authorization") != f"Bearer {API_KEY}":
        return JSONResponse({"code": "unauthorized", "detail": "bad API key"}, status_code=401)
    question = (await request.json())["question"]
    return JSONResponse(ANSWERS[question])


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """The chat page and a fixed /v1/ask on a loopback uvicorn server, stopped after the module."""
    app = Starlette(routes=[Route("/", _chat_page), Route("/v1/ask", _ask, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "chat page server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class ChatSession:
    """One browser page on the chat page, recording what a user would not want to happen."""

    def __init__(self, browser: Any, url: str) -> None:
        self.url = url
        self.page = browser.new_page(viewport={"width": 1000, "height": 800})
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.foreign_requests: list[str] = []
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.route("**/*", self._only_loopback)
        self.page.goto(url)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _only_loopback(self, route: Any) -> None:
        # The page must work offline: anything not from the gateway itself is refused and recorded.
        if route.request.url.startswith(self.url):
            route.continue_()
        else:
            self.foreign_requests.append(route.request.url)
            route.abort()

    def ask(self, question: str) -> Any:
        self.page.fill("#key", API_KEY)
        self.page.fill("#question", question)
        self.page.click("#go")
        self.page.wait_for_selector(".answer")
        self.page.wait_for_function("!document.getElementById('go').disabled")
        return self.page

    def style(self, selector: str, prop: str) -> str:
        return str(self.page.eval_on_selector(selector, f"e => getComputedStyle(e)[{prop!r}]"))

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def chat(browser: Any, page_url: str) -> Iterator[ChatSession]:
    session = ChatSession(browser, page_url)
    yield session
    assert session.errors == [], f"JavaScript errors on the page: {session.errors}"
    assert session.foreign_requests == [], f"the page fetched outside the gateway: {session.foreign_requests}"
    session.close()


def _png_decode(data: bytes) -> tuple[int, int, int, bytes]:
    """Check an 8-bit, non-interlaced RGB(A) PNG (what Chromium writes): width, height, bytes/pixel, raw rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r} chunk"
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
        if kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG format {header!r}"
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    assert len(raw) == height * (width * bpp + 1), "truncated image data"
    return width, height, bpp, raw


def _png_pixels(data: bytes) -> list[tuple[int, int, int]]:
    """The RGB pixels of a small PNG (pure Python: keep it to element screenshots)."""
    width, height, bpp, raw = _png_decode(data)
    stride = width * bpp
    pixels: list[tuple[int, int, int]] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = row[i - bpp] if i >= bpp else 0
            up, up_left = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        pixels.extend((row[i], row[i + 1], row[i + 2]) for i in range(0, stride, bpp))
        previous = row
    return pixels


def _dominant_colour(png: bytes) -> tuple[int, int, int]:
    return Counter(_png_pixels(png)).most_common(1)[0][0]


def _close(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 3 for a, b in zip(colour, expected, strict=True))


def test_answer_shows_claims_citations_sources_and_escapes_passages(chat: ChatSession, tmp_path: Path) -> None:
    page = chat.ask("ungrounded")

    claims = page.locator(".answer .claim")
    assert claims.count() == 3
    # The claim's own [n] marker becomes a link after it, not duplicated text.
    assert claims.nth(0).inner_text() == "Metformin is the first-line drug for type 2 diabetes."
    assert page.locator(".answer").inner_text().count("[1]") == 1

    # Only the unsupported claim is marked, visibly (dotted underline) and with the reason on hover.
    unsupported = page.locator(".claim.unsupported")
    assert unsupported.count() == 1
    assert unsupported.inner_text() == "It cures type 1 diabetes."
    assert UNSUPPORTED_TITLE in (unsupported.get_attribute("title") or "")
    assert "underline" in chat.style(".claim.unsupported", "textDecorationLine")
    assert chat.style(".claim.unsupported", "textDecorationStyle") == "dotted"
    assert "underline" not in chat.style(".claim:not(.unsupported)", "textDecorationLine")

    # Citations are superscript links; the gateway's own one is italic with a dagger and a legend.
    cites = page.locator(".answer sup > a.cite")
    assert [cites.nth(i).inner_text() for i in range(cites.count())] == ["[1]", "[2]", "[3]†"]
    assert page.locator(".cite.added").count() == 1
    assert chat.style(".cite.added", "fontStyle") == "italic"
    assert chat.style(".cite:not(.added)", "fontStyle") == "normal"
    assert page.get_by_text("† added by the gateway, not by the model").is_visible()

    # A citation jumps to its source and highlights it.
    cites.nth(1).click()
    assert page.evaluate("location.hash") == "#source-2"
    assert page.locator("ol.sources li:target").get_attribute("id") == "source-2"
    assert chat.style("ol.sources li:target", "outlineStyle") == "solid"

    # Sources: cited ones highlighted and labelled, the gateway's added one distinct, the rest plain.
    assert page.locator("ol.sources li.cited").count() == 2
    assert page.locator("ol.sources li.added").count() == 1
    cited_bg = chat.style("ol.sources li.cited", "backgroundColor")
    uncited_bg = chat.style("ol.sources li.uncited", "backgroundColor")
    added_bg = chat.style("ol.sources li.added", "backgroundColor")
    assert len({cited_bg, uncited_bg, added_bg}) == 3
    assert page.locator("ol.sources li.cited .label").first.inner_text() == "cited"
    assert page.locator("ol.sources li.added .label").inner_text() == "added by the gateway"
    assert float(chat.style("ol.sources li.uncited", "opacity")) < 1

    badges = page.locator(".badge")
    assert badges.all_inner_texts() == ["not grounded: the answer cites no source that supports it"]

    # The rest of the page as before: reasoning collapsed, the partial warning, the silo table.
    assert page.locator("details:has(> summary:text('Reasoning'))").get_attribute("open") is None
    assert page.locator(".partial").is_visible()
    assert page.locator("table tr").count() == 3
    assert "after 2.0 s" in page.locator("table").inner_text()

    # Untrusted passage text is shown as text and never runs.
    assert page.locator(".sources img, .answer img").count() == 0
    assert XSS in page.locator("#source-4").inner_text()
    assert chat.dialogs == []

    # What the user sees, rendered: colours from the screenshot itself, not from the DOM.
    assert _close(_dominant_colour(page.locator(".badge").screenshot()), (0xFF, 0xF8, 0xC5))
    assert _close(_dominant_colour(page.locator("#source-1").screenshot()), (0xDD, 0xF4, 0xFF))
    assert _close(_dominant_colour(page.locator("#source-4").screenshot()), (0xFF, 0xFF, 0xFF))

    shot = tmp_path / "chat-page.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    width, height, _, raw = _png_decode(data)
    assert (width, height) == (1000, page.evaluate("document.documentElement.scrollHeight"))
    assert len(data) > 20_000, "screenshot is suspiciously small"
    # A blank page filters down to a handful of byte values; text, badges and tinted boxes do not.
    assert len(set(raw)) > 100, "screenshot looks blank"


@pytest.mark.parametrize(
    ("question", "badges"),
    [
        ("grounded", ["grounded"]),
        ("abstained", ["the sources do not contain the answer"]),
        ("repetition", ["not grounded: the answer cites no source that supports it", "stopped: repetition detected"]),
        ("legacy", []),
    ],
)
def test_badge_line(chat: ChatSession, question: str, badges: list[str]) -> None:
    page = chat.ask(question)
    assert page.locator(".badge").all_inner_texts() == badges
    if question == "grounded":
        assert chat.style(".badge", "backgroundColor") == "rgb(218, 251, 225)"


def test_older_gateway_answer_renders_as_plain_text(chat: ChatSession) -> None:
    page = chat.ask("legacy")
    assert page.locator(".answer").inner_text() == GROUNDED_ANSWER["answer"]
    assert page.locator(".claim, .cite, .legend").count() == 0
    assert page.locator("ol.sources li.cited").count() == 2
    assert page.locator("ol.sources li.added").count() == 0
    assert page.locator("table tr").count() == 3
