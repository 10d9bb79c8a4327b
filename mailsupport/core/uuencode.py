"""Take uuencoded files out of a mail's text, as Lotus Notes and old mailers send them.

Before MIME, a file travelled inside the text as a ``begin 644 name`` ... ``end`` block, and
Lotus Notes still sends attachments that way: left in the text, a spreadsheet is 145 KB of
``M)5!$1BTQ...`` lines in the ticket. Python 3.13 removed the ``uu`` module, so the lines are
decoded here with ``binascii.a2b_uu``, which stays.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

_BEGIN = re.compile(r"^begin [0-7]{3,4} +(\S[^\r\n]*?)[ \t]*\r?$", re.MULTILINE)
_END = re.compile(r"^end[ \t]*\r?$", re.MULTILINE)
# A uuencoded line: a length character, then the encoded characters (trailing spaces, which
# some mailers strip, stand for zero bits).
_LINE = re.compile(r"[\x20-\x60]*")


@dataclass(frozen=True)
class UuFile:
    """A file found in the text: the name its ``begin`` line gives, and its bytes."""

    name: str
    content: bytes


def extract_uuencoded(text: str) -> tuple[str, list[UuFile]]:
    """``text`` without its uuencoded blocks, and the files they held, in order.

    A block that does not decode is left in the text as it was: it is someone's prose that
    happens to start with "begin 644".
    """
    if "begin " not in text:
        return text, []
    files: list[UuFile] = []
    kept: list[str] = []
    position = 0
    for begin in _BEGIN.finditer(text):
        if begin.start() < position:
            continue  # inside a block already taken out
        end = _END.search(text, begin.end())
        content = _decode(text[begin.end() : end.start()]) if end else None
        if end is None or content is None:
            continue
        kept.append(text[position : begin.start()])
        files.append(UuFile(begin.group(1), content))
        position = end.end() + text.startswith("\n", end.end())
    kept.append(text[position:])
    return "".join(kept), files


def _decode(block: str) -> bytes | None:
    """The bytes of a block's lines; None unless every line is uuencoding."""
    lines = [line.rstrip("\r") for line in block.strip("\r\n").split("\n")]
    decoded = bytearray()
    for line in lines:
        data = _decode_line(line) if _LINE.fullmatch(line) else None
        if data is None:
            return None
        decoded += data
    return bytes(decoded) if decoded else None


def _decode_line(line: str) -> bytes | None:
    if not line:
        return b""
    encoded = line.encode("ascii")
    try:
        return binascii.a2b_uu(encoded)
    except binascii.Error:
        pass
    # Some encoders write extra characters after the data: keep those the length character
    # counts, as the uu module did.
    try:
        return binascii.a2b_uu(encoded[: (((encoded[0] - 32) & 63) * 4 + 5) // 3])
    except binascii.Error:
        return None
