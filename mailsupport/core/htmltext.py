"""Render an HTML mail body as plain text for mail that carries no real text part.

Ticket text, quoting and notifications all work on plain text; the HTML itself is kept beside
it. Rendering keeps the layout a reader relies on (paragraphs, lists, table cells) and drops
styles, scripts and markup. Some mailers send a text part that is only a stub ("this message is
in HTML", or the first line of what the HTML says); the text is then the HTML's.
"""

from __future__ import annotations

import re

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
    try:
        text = get_text(cleaned, _CONFIG)
    except (ValueError, RecursionError):
        # A document lxml cannot build a tree from has no text we could show reliably; the
        # caller still keeps the HTML itself.
        return ""
    text = _TRAILING_SPACE.sub("", text.replace("\r\n", "\n"))
    return _BLANK_RUN.sub("\n\n", text).strip("\n")


def _keep_text_after_the_end(html: str) -> str:
    """The document without its closing body and html tags when text follows them.

    QQ Mail, among others, adds its text after ``</html>``; lxml drops everything there, where
    a browser shows it at the end of the body.
    """
    ends = list(_DOCUMENT_END.finditer(html))
    if not ends or not html[ends[-1].end() :].strip():
        return html
    return _DOCUMENT_END.sub("", html)
