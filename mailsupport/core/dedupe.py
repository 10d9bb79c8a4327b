"""The dedupe key: one stored message per distinct mail, whichever channel brought it.

Two deliveries of one mail differ in the trace headers each hop prepends (Received,
Return-Path, Delivered-To...), so the key hashes the Message-ID and the body, never the whole
header block. Mail without a Message-ID falls back to From, Date and Subject as written.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mailsupport.core.limits import CONTROL

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_UNFOLD = re.compile(rb"\r?\n[ \t]+")
_LINE_END = re.compile(rb"\r\n|\r")
_ID_RE = re.compile(rb"<([^<>\s]+)>")
# An mbox file writes a body line "From ..." as ">From ..." (and ">From" as ">>From" in the
# mboxrd variant), and Python's reader gives it back quoted. The key ignores that quoting, so
# mail imported from an mbox is the same mail when it also arrives by SMTP.
_MBOX_QUOTED = re.compile(rb"(?m)^>+(?=From )")


@dataclass(frozen=True)
class DedupeKey:
    key: str  # 64 hex characters
    message_id: str  # "" when the mail has none


def _split(raw: bytes) -> tuple[bytes, bytes]:
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b""
    return raw[: match.start()], raw[match.end() :]


def _header_values(block: bytes) -> dict[bytes, bytes]:
    """First value of each header, lower-cased name; enough for the few we hash."""
    values: dict[bytes, bytes] = {}
    for line in _UNFOLD.sub(b" ", block).splitlines():
        name, sep, value = line.partition(b":")
        if sep and name and b" " not in name.strip():
            values.setdefault(name.strip().lower(), value.strip())
    return values


def _message_id(value: bytes | None) -> str:
    if not value:
        return ""
    match = _ID_RE.search(value)
    token = match.group(1) if match else value.split()[0] if value.split() else b""
    return token.decode("ascii", "replace")[:900]


def _canonical_body(body: bytes) -> bytes:
    body = _LINE_END.sub(b"\n", body)
    if b">From " in body:
        body = _MBOX_QUOTED.sub(b"", body)
    return body.rstrip()


def dedupe_key(raw: bytes) -> DedupeKey:
    block, body = _split(raw)
    headers = _header_values(block)
    message_id = _message_id(headers.get(b"message-id"))
    body_hash = hashlib.sha256(_canonical_body(body)).digest()
    digest = hashlib.sha256()
    if message_id:
        digest.update(b"mid\0" + message_id.encode() + b"\0")
    else:
        for name in (b"from", b"date", b"subject", b"to"):
            digest.update(name + b"\0" + headers.get(name, b"") + b"\0")
    digest.update(body_hash)
    # Stored for display only, and PostgreSQL cannot store a NUL: a mail whose Message-ID held
    # one could not be stored at all. The key still hashes the id as it came.
    return DedupeKey(digest.hexdigest(), CONTROL.sub("", message_id))
