"""Repair the top header block of a mail where the email package would lose headers.

Two shapes are repaired, in the raw bytes, before the email package sees them:

- A long header continued on lines without indentation (two encoded words of a subject, a
  Content-Type whose boundary went to the next line), as some mailers and gateways write it.
  The email package takes such a line for the start of the body: the subject loses its second
  half and, the Content-Transfer-Encoding below it being gone, a base64 body is shown as
  base64. Mature readers (Thunderbird, Mutt) take the line as part of the header before it.
- White space between a field name and its colon (``Subject : x``), which RFC 5322 still
  allows in its obsolete syntax (``field-name *WSP ":"``). The email package starts the body
  there, so every header after it, From included, was lost. The white space is removed, for
  lines among the headers only: where a body starts without its blank line, a body line such
  as ``Note : call me`` stays in the body.

The block is read by position, never split into a list of lines, so that a mail of millions
of short lines costs little. ``body_inside`` tells where the email package will start the body
once the repairs are made, which is what the dedupe key needs to know.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

# The email package's own test for a header line (feedparser.headerRE), on bytes: a field name
# and its colon, an mbox "From " line, or a continuation. Anything else ends its header block.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]*:")
# A field line further down: lines end at CR LF, LF or a bare CR, as for the email package.
_NEXT_FIELD = re.compile(rb"(?<=[\r\n])[\x21-\x39\x3b-\x7e]*:")
# The obsolete form: a name, white space, then the colon. Group 1 is the white space.
_SPACED = re.compile(rb"[\x21-\x39\x3b-\x7e]+([\t ]+):")
# A line break followed by a line that is not a header line (nor the blank line), or is a
# "From :" the email package would drop as a misplaced mbox line: the cheap test that lets
# nearly every message through untouched.
_ODD = re.compile(rb"(?:\r\n?|\n)(?!From (?![\t ]*:)|[\x21-\x39\x3b-\x7e]*:|[\t ]|[\r\n]|\Z)")
_LINE_END = re.compile(rb"\r\n?|\n")
# A line that bytes.strip() empties but the email package does not take for the blank line.
_BLANKISH = re.compile(rb"[ \t\x0b\x0c]*(?:[\r\n]|\Z)")
# The end of the header block: a line break, then the blank line. A bare CR ends a line too, as
# for the email package (mail from old Macs has no other), but never the CR of a CR LF.
_BLANK_LINE = re.compile(rb"(\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
# What can only be the rest of a header, even on its last line: an encoded word, or a MIME
# parameter ("boundary=...", "filename*0=...").
_CONTINUATION = re.compile(rb"=\?|[A-Za-z0-9_-]+(?:\*[0-9]*)*\*?[ \t]*=")
_TRAILING_BLANKS = b" \t\x0b\x0c"

# ("spaced", start, end) of white space to drop, ("fold", line, 0), ("body", end, start).
Event = tuple[str, int, int]


def repair_header_block(raw: bytes) -> tuple[bytes, list[str]]:
    """``raw`` with its top header block repaired, and a note on each kind of repair made."""
    out = bytearray()
    done = 0
    spaced = folded = 0
    view = memoryview(raw)
    for kind, start, end in _events(raw):
        if kind == "spaced":
            out += view[done:start]
            done = end
            spaced += 1
        elif kind == "fold":
            out += view[done:start]
            out += b" "
            done = start
            folded += 1
    if not spaced and not folded:
        return raw, []
    out += view[done:]
    notes = []
    if spaced:
        notes.append(f"{spaced} header name(s) followed by white space before the colon")
    if folded:
        notes.append(f"{folded} unindented header line(s) read as continuations")
    return bytes(out), notes


def body_inside(raw: bytes) -> tuple[int, int] | None:
    """Where the email package, once the block is repaired, ends the headers and starts the body
    when the body starts inside the top header block; None when the block holds only headers
    (the body follows its blank line)."""
    for kind, start, end in _events(raw):
        if kind == "body":
            return start, end
    return None


def _events(raw: bytes) -> Iterator[Event]:
    """The repairs of the top header block in order, then ("body", end of the headers, start of
    the body) when the body starts inside it."""
    end = _search(_BLANK_LINE, raw, 0, len(raw))
    scan = _Scan(raw, end.end(1) if end else len(raw))
    first = _SPACED.match(raw, 0, scan.limit)
    if first is None and not _HEADER_LINE.match(raw, 0, scan.limit):
        blank = _LINE_END.match(raw, 0, scan.limit)  # the blank line that ends no headers
        yield ("body", 0, blank.end() if blank else 0)  # a body without headers
        return
    if first is not None:
        yield ("spaced", first.start(1), first.end(1))
    scan.headed = first is not None or bool(_FIELD.match(raw, 0, scan.limit))
    odd = _search(_ODD, raw, 0, scan.limit)
    while odd is not None:
        start = odd.end()
        event = scan.line(start, odd.start())
        if event is None:
            yield ("body", start, start)
            return
        yield event
        line_end = _LINE_END.search(raw, start, scan.limit)
        odd = _search(_ODD, raw, line_end.start(), scan.limit) if line_end else None


@dataclass
class _Scan:
    """What is known of the header block while its lines that are no header lines are read.

    Such a line is folded in when a header follows it before the blank line, or when it can
    only be the rest of a header (an encoded word, a parameter, or after a header ending in ","
    or ";"); otherwise the body starts there, lacking its blank line. The obsolete ``Name :``
    is a header while only headers and such certain continuations precede it.
    """

    raw: bytes
    limit: int
    headed: bool = False  # whether a field came before, once found
    searched: int = 0  # how far fields were looked for
    among_headers: bool = True  # whether only headers and certain continuations came before
    next_field: int = -1  # where the next field line starts, once looked for; limit for none

    def line(self, start: int, previous_end: int) -> Event | None:
        """The repair of the line at ``start``; None when the body starts there."""
        raw, limit = self.raw, self.limit
        spaced = _SPACED.match(raw, start, limit) if self.among_headers else None
        if spaced is not None:
            self.headed = True
            return ("spaced", spaced.start(1), spaced.end(1))
        if _BLANKISH.match(raw, start, limit):
            return None
        if self._headed(start) and _continues(raw, start, previous_end, limit):
            return ("fold", start, 0)
        self.among_headers = False
        return ("fold", start, 0) if self._field_follows(start) else None

    def _headed(self, start: int) -> bool:
        if not self.headed:
            self.headed = _search(_NEXT_FIELD, self.raw, self.searched, start) is not None
            self.searched = start
        return self.headed

    def _field_follows(self, start: int) -> bool:
        if self.next_field < start:
            found = _search(_NEXT_FIELD, self.raw, start, self.limit)
            self.next_field = found.start() if found else self.limit
        return self.next_field < self.limit


# A search over a header block of millions of lines, run a piece at a time: in one call it held
# the interpreter lock for a quarter of a second, while the listener's event loop, hashing that
# mail's dedupe key in a thread beside it, answered nobody. Each piece is searched with the
# overlap after it, longer than any match and what its lookahead reads (but a field name over
# 64 KB, which no mailbox writes), so a match is found as a search of the whole would find it.
_PIECE = 256 * 1024
_OVERLAP = 64 * 1024


def _search(
    pattern: re.Pattern[bytes], raw: bytes, start: int, limit: int
) -> re.Match[bytes] | None:
    while True:
        stop = min(start + _PIECE, limit)
        found = pattern.search(raw, start, min(stop + _OVERLAP, limit))
        if found is not None and found.start() < stop:
            return found
        if stop >= limit:
            return None
        start = stop


def _continues(raw: bytes, start: int, previous_end: int, limit: int) -> bool:
    """Whether the line at ``start`` can only be the rest of the header before it."""
    if _CONTINUATION.match(raw, start, limit):
        return True
    at = previous_end - 1
    while at >= 0 and raw[at] in _TRAILING_BLANKS:
        at -= 1
    return at >= 0 and raw[at] in b",;"
