"""The dedupe key: one stored message per distinct mail, whichever channel brought it.

Two deliveries of one mail differ in the trace headers each hop prepends (Received,
Return-Path, Delivered-To...), so the key hashes the Message-ID and the body, never the whole
header block. Mail without a Message-ID falls back to From, Date and Subject as written.

The body is what the parser takes for it: where a mail has no header block, or its body starts
without the blank line, the body starts at its first line that is no header, not past a blank
line further down (the text before it read as headers, which made two such mails one). A mail
with neither a Message-ID nor any of the headers the fallback reads is keyed on all it holds
after its trace headers. Mail with a well-formed header block keeps the key it always had.

The mail is read in pieces of at most ``CHUNK`` bytes (a line longer than that is cut inside),
never as one list of lines or of regular expression matches: on a mail of millions of short
lines those lists took 60 times the mail's size and seconds of CPU. Whatever the pieces, the key
is the one the whole mail canonicalised at once would give, so mail stored before is still
recognised.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mailsupport.core.headerblock import body_inside
from mailsupport.core.limits import CONTROL

CHUNK = 1 << 16  # bytes handled at a time; small enough that no step holds the GIL for long

_UNFOLD = re.compile(rb"\r?\n[ \t]+")
# Where a header line ends once folded lines are joined: a line break that no white space
# continues, or a bare CR (no fold starts with one).
_LOGICAL_END = re.compile(rb"\r?\n(?![ \t])|\r(?!\n)")
_ID_RE = re.compile(rb"<([^<>\s]+)>")
# An mbox file writes a body line "From ..." as ">From " (and ">From" as ">>From" in the
# mboxrd variant), and Python's reader gives it back quoted. The key ignores that quoting, so
# mail imported from an mbox is the same mail when it also arrives by SMTP.
_MBOX_QUOTED = re.compile(rb"(?m)^>+(?=From )")
_QUOTES = re.compile(rb">*")
_HASHED_HEADERS = (b"from", b"date", b"subject", b"to")
_READ_HEADERS = frozenset({b"message-id", *_HASHED_HEADERS})
# What a hop prepends, and an mbox file's "From " line: left out of a key that reads headers.
_TRACE_HEADERS = frozenset({b"received", b"return-path", b"delivered-to", b"x-original-to"})
_LONGEST_TRACE = max(map(len, _TRACE_HEADERS))
_BLANKS = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips


@dataclass(frozen=True)
class DedupeKey:
    key: str  # 64 hex characters
    message_id: str  # "" when the mail has none


def _header_spans(raw: bytes, end: int) -> dict[bytes, tuple[int, int]]:
    """Where the first value of each header the key reads lies, by lower-cased name."""
    spans: dict[bytes, tuple[int, int]] = {}
    start = 0
    while start < end and len(spans) < len(_READ_HEADERS):
        found = _LOGICAL_END.search(raw, start, end)
        stop, after = (found.start(), found.end()) if found else (end, end)
        colon = raw.find(b":", start, stop)
        if colon >= 0:
            # A name holding a folded line break or a space is refused as before; neither is
            # in the names read here, so comparing the stripped name is the same test.
            name = raw[start:colon].strip().lower()
            if name in _READ_HEADERS and name not in spans:
                spans[name] = (colon + 1, stop)
        start = after
    return spans


def _unfolded(raw: bytes, span: tuple[int, int], chunk: int) -> Iterator[bytes]:
    """A header value with each folded line break made one space, a piece at a time."""
    start, stop = span
    while start < stop:
        cut = _fold_safe_cut(raw, start, stop, chunk)
        yield _UNFOLD.sub(b" ", raw[start:cut])
        start = cut


def _fold_safe_cut(raw: bytes, start: int, stop: int, chunk: int) -> int:
    """Where to end a piece: just before a line break, so that no fold is cut in two."""
    if stop - start <= chunk:
        return stop
    # Looked for after the piece's first two bytes, which may be the CR LF it starts with.
    limit = max(start + 2, start + chunk)
    cut = raw.rfind(b"\n", start + 2, limit)
    if cut < 0:
        cut = raw.find(b"\n", limit, stop)
        if cut < 0:
            return stop
    return cut - 1 if raw[cut - 1] == 0x0D else cut  # a fold's CR goes with its LF


def _message_id(value: bytes | None) -> str:
    if not value:
        return ""
    match = _ID_RE.search(value)
    first = value.split(None, 1)
    token = match.group(1) if match else first[0] if first else b""
    return token.decode("ascii", "replace")[:900]


def _body_pieces(raw: bytes, start: int, chunk: int) -> Iterator[tuple[bytes, bool]]:
    """The body in pieces that end a line (or cut one too long), each with whether it starts
    a line. A CR LF is never cut in two, nor a run of quotes that ``From `` follows."""
    at_line_start = True
    size = len(raw)
    while start < size:
        limit = start + chunk
        if limit >= size:
            end = size
        else:
            line_end = max(raw.rfind(b"\n", start, limit), raw.rfind(b"\r", start, limit))
            if line_end >= 0:
                end = line_end + 1
                if raw[line_end] == 0x0D and raw.startswith(b"\n", end):
                    end += 1  # the LF of a CR LF that ends the window
            else:
                end = _long_line_cut(raw, start, limit, at_line_start)
        yield raw[start:end], at_line_start
        at_line_start = raw[end - 1] in b"\r\n"
        start = end


def _long_line_cut(raw: bytes, start: int, limit: int, at_line_start: bool) -> int:
    """Where to cut a line longer than a piece: past its leading quotes when ``From `` follows
    them, so that the quoting is seen whole."""
    if not at_line_start:
        return limit
    quoted = _QUOTES.match(raw, start)
    assert quoted is not None  # ">*" matches anywhere
    if quoted.end() > start and raw.startswith(b"From ", quoted.end()):
        return max(limit, quoted.end() + len(b"From "))
    return limit


def _canonical(piece: bytes, at_line_start: bool) -> bytes:
    """Line ends as LF, mbox quoting of From lines undone."""
    piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b">From " not in piece:
        return piece
    if at_line_start:
        return _MBOX_QUOTED.sub(b"", piece)
    return _MBOX_QUOTED.sub(b"", b"x" + piece)[1:]  # its first byte begins no line


def _update_stripped(digest: Any, pieces: Iterable[bytes], *, leading: bool) -> None:
    """Hash the pieces as one, less the white space at the end (and at the start if
    ``leading``), holding back white space until something else follows it."""
    blank: list[bytes] = []
    started = not leading
    for piece in pieces:
        text = piece if started else piece.lstrip()
        started = started or bool(text)
        kept = text.rstrip()
        if kept:
            for held in blank:
                digest.update(held)
            blank.clear()
            digest.update(kept)
        if len(kept) < len(text):
            blank.append(text[len(kept) :])


def _body_hash(raw: bytes, start: int, chunk: int) -> bytes:
    """The hash of the canonical body with its trailing white space left out."""
    digest = hashlib.sha256()
    pieces = _body_pieces(raw, start, chunk)
    _update_stripped(digest, (_canonical(*piece) for piece in pieces), leading=False)
    return digest.digest()


def _first_own_line(raw: bytes, end: int) -> int | None:
    """Where the first header line that is no trace header starts."""
    start = 0
    while start < end:
        found = _LOGICAL_END.search(raw, start, end)
        stop, after = (found.start(), found.end()) if found else (end, end)
        colon = raw.find(b":", start, stop)
        if not _is_trace(raw, start, colon if colon >= 0 else stop):
            return start
        start = after
    return None


def _is_trace(raw: bytes, start: int, stop: int) -> bool:
    """Whether the field name in ``raw[start:stop]``, white space around it ignored, is a trace
    header's, or the line an mbox "From " line; the name is never copied whole."""
    if raw.startswith(b"From ", start):
        return True
    while start < stop and raw[start] in _BLANKS:
        start += 1
    while stop > start and raw[stop - 1] in _BLANKS:
        stop -= 1
    return stop - start <= _LONGEST_TRACE and raw[start:stop].lower() in _TRACE_HEADERS


def _header_end(raw: bytes) -> tuple[int, int]:
    """Where the header block ends and the body starts: the first match of ``\\r?\\n\\r?\\n``.

    Found with ``find``: that pattern held the interpreter lock for 90 ms over 9 MB of header
    lines, in which the listener's event loop, hashing in a thread beside it, answered nobody.
    """
    found = [at for at in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if at >= 0]
    if not found:
        return len(raw), len(raw)
    line_end = min(found)
    start = line_end - 1 if line_end and raw[line_end - 1] == 0x0D else line_end
    return start, line_end + (2 if raw[line_end + 1] == 0x0A else 3)


def _split(raw: bytes) -> tuple[int, int]:
    """Where the header block ends and where the body the key hashes starts."""
    block_end, body_start = _header_end(raw)
    inside = body_inside(raw)
    if inside is not None and inside[0] < block_end:
        return inside
    return block_end, body_start


def dedupe_key(raw: bytes, *, chunk: int = CHUNK) -> DedupeKey:
    block_end, body_start = _split(raw)
    spans = _header_spans(raw, block_end)
    mid_span = spans.get(b"message-id")
    mid_value = b"".join(_unfolded(raw, mid_span, chunk)).strip() if mid_span else None
    message_id = _message_id(mid_value)
    digest = hashlib.sha256()
    if message_id:
        digest.update(b"mid\0" + message_id.encode() + b"\0")
    else:
        for name in _HASHED_HEADERS:
            digest.update(name + b"\0")
            span = spans.get(name)
            if span is not None:
                _update_stripped(digest, _unfolded(raw, span, chunk), leading=True)
            digest.update(b"\0")
        if not any(name in spans for name in _HASHED_HEADERS):
            own = _first_own_line(raw, block_end)
            body_start = body_start if own is None else own
    digest.update(_body_hash(raw, body_start, chunk))
    # Stored for display only, and PostgreSQL cannot store a NUL: a mail whose Message-ID held
    # one could not be stored at all. The key still hashes the id as it came.
    return DedupeKey(digest.hexdigest(), CONTROL.sub("", message_id))
