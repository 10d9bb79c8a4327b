"""Repair a header block whose long headers were continued on lines without indentation.

Some mailers and gateways wrap a long header (two encoded words of a subject, a Content-Type
whose boundary went to the next line) without the leading white space that marks a
continuation. The email package takes such a line for the start of the body: the subject loses
its second half and, the Content-Transfer-Encoding below it being gone, a base64 body is shown
as base64. Mature readers (Thunderbird, Mutt) take the line as part of the header before it,
which is what is done here, in the raw bytes, before the email package sees them.
"""

from __future__ import annotations

import re

# The email package's own test for a header line (feedparser.headerRE), on bytes: a field name
# and its colon, an mbox "From " line, or a continuation. Anything else ends its header block.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]*:")
# A line break followed by a line that is none of those (nor the blank line): the cheap test
# that lets nearly every message through untouched.
_STRAY = re.compile(rb"\n(?!From |[\x21-\x39\x3b-\x7e]*:|[\t ]|\r?\n|\r?\Z)")
_BLANK_LINE = re.compile(rb"\n\r?\n")
# What can only be the rest of a header, even on its last line: an encoded word, or a MIME
# parameter ("boundary=...", "filename*0=...").
_CONTINUATION = re.compile(rb"=\?|[A-Za-z0-9_-]+(?:\*[0-9]*)*\*?[ \t]*=")


def fold_stray_lines(raw: bytes) -> tuple[bytes, int]:
    """``raw`` with unindented continuation lines of its top header block indented.

    A line is taken for a continuation when a header follows it before the blank line, or when
    it can only be the rest of a header (an encoded word, a parameter, or after a header ending
    in "," or ";"); otherwise it stays the start of a body that lacks its blank line. Returns
    the bytes and how many lines were folded in.
    """
    end = _BLANK_LINE.search(raw)
    limit = end.start() + 1 if end else len(raw)
    if _STRAY.search(raw, 0, limit) is None:
        return raw, 0
    lines = raw[:limit].splitlines(keepends=True)
    if not lines or not _HEADER_LINE.match(lines[0]):
        return raw, 0  # no header at all: a body without headers
    stray = _stray_lines(lines)
    if not stray:
        return raw, 0
    for index in stray:
        lines[index] = b" " + lines[index]
    return b"".join(lines) + raw[limit:], len(stray)


def _stray_lines(lines: list[bytes]) -> list[int]:
    """The indexes of the lines to fold in, in order."""
    fields = [index for index, line in enumerate(lines) if _FIELD.match(line)]
    if not fields:
        return []
    last_field = fields[-1]
    stray: list[int] = []
    for index, line in enumerate(lines):
        if index == 0 or _HEADER_LINE.match(line) or not line.strip():
            continue
        if index < last_field or _continues(lines, index):
            stray.append(index)
        else:
            break  # the body starts here, as the email package will read it
    return stray


def _continues(lines: list[bytes], index: int) -> bool:
    """Whether a line after the last header can only be that header's rest."""
    return bool(_CONTINUATION.match(lines[index])) or lines[index - 1].rstrip().endswith(
        (b",", b";")
    )
