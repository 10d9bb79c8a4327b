"""Render an HTML mail body as plain text for mail that carries no real text part.

Ticket text, quoting and notifications all work on plain text; the HTML itself is kept beside
it. Rendering keeps the layout a reader relies on (paragraphs, lists, table cells) and drops
styles, scripts and markup. Some mailers send a text part that is only a stub ("this message is
in HTML", or the first line of what the HTML says); the text is then the HTML's.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from inscriptis import get_text
from inscriptis.model.config import ParserConfig

_CONFIG = ParserConfig()

# lxml refuses or mangles these, and they never carry meaning in a mail body.
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{3,}")
_DOCUMENT_END = re.compile(r"</(?:html|body)\s*>", re.IGNORECASE)

# A text part of at most this many words may be a stub of the HTML beside it...
STUB_WORDS = 40
# ... and is one when the HTML says this many times as much, or when it is one line, or tells
# the reader to use an HTML client, and the HTML says more.
MORE_WORDS = 3
# inscriptis builds an lxml tree and a layout of every element: a 9 MB HTML table took 60 times
# its size and 15 s. Longer HTML than this is rendered by a streaming pass instead, which keeps
# the text and the breaks between blocks (a list's bullets, a table's layout go).
STREAM_AT_LEAST = 256 * 1024  # characters of HTML
_FEED = 64 * 1024  # characters handed to the streaming parser at a time
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
    ]
)
_CELLS = frozenset({"td", "th"})
_HIDDEN = frozenset({"script", "style", "head", "title", "template"})
_HTML_NOTICE = re.compile(
    r"html|browser|web ?page|web version|online version|view (?:it |this )?online", re.IGNORECASE
)


def body_text(plain: str, html: str) -> str:
    """The text of a mail from its text and HTML parts: the text part unless it is a stub.

    A faithful text alternative is kept as it is, and the HTML is rendered only when the text
    part is short enough to be a stub.
    """
    if not html:
        return plain
    if not plain.strip():
        return html_to_text(html)
    words = len(plain.split())
    if words > STUB_WORDS:
        return plain
    rendered = html_to_text(html)
    more = len(rendered.split())
    if more <= words:
        return plain
    one_line = sum(1 for line in plain.splitlines() if line.strip()) == 1
    stub = one_line or more >= MORE_WORDS * words or _HTML_NOTICE.search(plain) is not None
    return rendered if stub else plain


def html_to_text(html: str) -> str:
    """The readable text of an HTML document; "" when there is none or it cannot be read."""
    cleaned = _keep_text_after_the_end(_UNSAFE_CHARACTERS.sub("", html))
    if not cleaned.strip():
        return ""
    if len(cleaned) >= STREAM_AT_LEAST:
        return _tidy(_streamed_text(cleaned))
    try:
        text = get_text(cleaned, _CONFIG)
    except (ValueError, RecursionError):
        # A document lxml cannot build a tree from has no text we could show reliably; the
        # caller still keeps the HTML itself.
        return ""
    return _tidy(text)


def _tidy(text: str) -> str:
    text = _TRAILING_SPACE.sub("", text.replace("\r\n", "\n"))
    return _BLANK_RUN.sub("\n\n", text).strip("\n")


class _StreamedText(HTMLParser):
    """The text of an HTML document read tag by tag, without building a tree.

    Each block element starts a line, table cells are set apart by two spaces, and the text in
    scripts, styles and the head is left out. The pieces are joined every few thousand, so the
    text is held as a few long strings and not as one string per cell.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._pieces: list[str] = []
        self._hidden = 0
        self._line_started = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCKS:
            self._break(tag)
        elif tag in _CELLS and self._line_started:
            self._emit("  ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self._break(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS and tag != "br":
            self._break(tag)

    def _break(self, tag: str) -> None:
        # A line break always; any other block only ends a line that has text on it.
        if tag == "br" or self._line_started:
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        text = " ".join(data.split())
        if text:
            if self._line_started and data[:1].isspace():
                text = " " + text
            self._emit(text + (" " if data[-1:].isspace() else ""))

    def _emit(self, piece: str) -> None:
        self._line_started = not piece.endswith("\n")
        self._pieces.append(piece)
        if len(self._pieces) >= 4096:
            self.chunks.append("".join(self._pieces))
            self._pieces.clear()

    def text(self) -> str:
        self.close()
        self.chunks.append("".join(self._pieces))
        self._pieces.clear()
        return "".join(self.chunks)


def _streamed_text(html: str) -> str:
    reader = _StreamedText()
    for start in range(0, len(html), _FEED):
        reader.feed(html[start : start + _FEED])
    return reader.text()


def _keep_text_after_the_end(html: str) -> str:
    """The document without its closing body and html tags when text follows them.

    QQ Mail, among others, adds its text after ``</html>``; lxml drops everything there, where
    a browser shows it at the end of the body.
    """
    ends = list(_DOCUMENT_END.finditer(html))
    if not ends or not html[ends[-1].end() :].strip():
        return html
    return _DOCUMENT_END.sub("", html)
