"""Render an HTML mail body as plain text for mail that carries no text part.

Ticket text, quoting and notifications all work on plain text; the HTML itself is kept beside
it. Rendering keeps the layout a reader relies on (paragraphs, lists, table cells) and drops
styles, scripts and markup.
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


def html_to_text(html: str) -> str:
    """The readable text of an HTML document; "" when there is none or it cannot be read."""
    cleaned = _UNSAFE_CHARACTERS.sub("", html)
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
