"""Bound the top header block a mail's parser is given, in the raw bytes.

The email package holds every header line as a string of its own, and each header as a pair of
strings more: 200,000 headers took 15 times their size to parse, one header folded over
millions of lines 31 times. Real mail has a few dozen headers of a few kilobytes; past the
bounds here, only the headers the pipeline reads are kept (the first of each name), and a header
longer than a bound is cut at a line break. The stored message keeps every byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

MAX_HEADER_BYTES = 256 * 1024  # of the top header block, before only the wanted headers count
MAX_FIELDS = 1000  # headers, likewise
MAX_FIELD_BYTES = 64 * 1024  # of one header, continuation lines included

# What the pipeline reads: addressing, threading, MIME and the marks of automatic mail.
WANTED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "sender",
        "return-path",
        "delivered-to",
        "x-original-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "auto-submitted",
        "precedence",
        "list-id",
        "list-unsubscribe",
        "x-auto-response-suppress",
        "x-autoreply",
        "x-autorespond",
        "x-loop",
        "x-failed-recipients",
    }
)

_BLANK_LINE = re.compile(rb"\n\r?\n")
# A line that does not continue the one before it starts the next header.
_NEXT_FIELD = re.compile(rb"\n(?![ \t])")
_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def bound_header_block(raw: bytes) -> tuple[bytes, str | None]:
    """``raw`` with its top header block bounded, and a note of what was left out or cut.

    Nearly every mail is returned as it is, after two scans in C.
    """
    end = _BLANK_LINE.search(raw)
    limit = end.start() + 1 if end else len(raw)
    if limit <= MAX_HEADER_BYTES and raw.count(b"\n", 0, limit) < MAX_FIELDS:
        return raw, None
    kept: list[bytes] = []
    names: set[str] = set()
    used = left_out = cut = 0
    for start, stop in _fields(raw, limit):
        name = _field_name(raw, start)
        in_bounds = len(kept) < MAX_FIELDS and used + min(stop - start, MAX_FIELD_BYTES) <= (
            MAX_HEADER_BYTES
        )
        if not in_bounds and (name not in WANTED or name in names):
            left_out += 1
            continue
        field = _bounded_field(raw, start, stop)
        cut += len(field) < stop - start
        used += len(field)
        names.add(name)
        kept.append(field)
    if not left_out and not cut:
        return raw, None
    note = (
        f"header block of {limit} bytes bounded: {left_out} header(s) left out, {cut} cut "
        f"to {MAX_FIELD_BYTES} bytes (all are in the stored message)"
    )
    return b"".join(kept) + raw[limit:], note


def _fields(raw: bytes, limit: int) -> Iterator[tuple[int, int]]:
    """Where each header of the block starts and ends, its continuation lines included."""
    start = 0
    for found in _NEXT_FIELD.finditer(raw, 0, limit):
        yield start, found.end()
        start = found.end()
    if start < limit:
        yield start, limit


def _field_name(raw: bytes, start: int) -> str:
    match = _NAME.match(raw, start, start + 200)
    return match.group(1).decode("ascii").lower() if match else ""


def _bounded_field(raw: bytes, start: int, stop: int) -> bytes:
    """The header, or its first MAX_FIELD_BYTES ended at a line break."""
    if stop - start <= MAX_FIELD_BYTES:
        return raw[start:stop]
    end = start + MAX_FIELD_BYTES
    line_end = raw.rfind(b"\n", start, end)
    if line_end > start:
        return raw[start : line_end + 1]
    return raw[start:end] + b"\r\n"  # one line longer than the bound
