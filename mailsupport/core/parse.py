"""Parse one raw message into a ParsedMessage.

All tolerance for broken real-world mail lives here, so every later step works on clean,
decoded values. The MIME tree is built once with the email package; mail-parser's readers take
the address and date headers from that same tree, and the body and attachments are collected
in one iterative walk that decodes each text part in its declared (or detected) charset. The
only exception that leaves this module is MessageParseError, with a one-sentence reason.
"""

from __future__ import annotations

import binascii
import email
import email.utils
import io
import mimetypes
import quopri
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import feedparser
from email.errors import InvalidBase64LengthDefect, MessageError
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Compat32
from typing import Any

from mailparser.const import ADDRESSES_HEADERS
from mailparser.dates import date_diagnostics, parse_mail_date
from mailparser.utils import get_addresses

from mailsupport.core.charsets import decode_encoded_words, decode_header, decode_raw_header
from mailsupport.core.charsets import decode_text as decode_part_text
from mailsupport.core.headerblock import repair_header_block
from mailsupport.core.headerbound import bound_header_block
from mailsupport.core.htmltext import body_text
from mailsupport.core.limits import address_problem, bounded_message_id
from mailsupport.core.malformed import recover_mailbox
from mailsupport.core.message import Address, Attachment, ParsedMessage
from mailsupport.core.partbound import bound_parts
from mailsupport.core.uuencode import extract_uuencoded
from mailsupport.errors import MessageParseError

# Real mail nests a handful of levels; beyond this a message is an attack on the parser.
MAX_NESTING = 100

# Enough to diagnose a message; a hostile one must not turn its defect list into a payload.
MAX_DEFECTS = 50

MAX_FILENAME = 200

# The address headers mail-parser reads; raw 8-bit bytes there make it drop the mailbox.
_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "delivered-to", "sender"})
# Read with mail-parser's address reader: its own list, and Sender, a sender of last resort.
_READ_ADDRESSES = frozenset(ADDRESSES_HEADERS) | {"sender"}
_BODY_TYPES = frozenset({"text/plain", "text/html"})
_NAMING_HEADERS = frozenset({"content-disposition", "content-type"})

_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_BARE_ID = re.compile(r"[^\s<>,;()\"']+@[^\s<>,;()\"']+")
_WHITESPACE = re.compile(r"\s+")
# The control characters that str.split() does not take for white space.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
_TYPE_TOKEN = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_ENCODED_WORD_CHARSET = re.compile(r"=\?([^?\s*]+)[^?\s]*\?[bBqQ]\?")
_CHARSET_PARAMETER = re.compile(r"charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)
_FILENAME_JUNK = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_DOT_RUN = re.compile(r"\.{2,}")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")

# Only the built-in table, so a fallback name does not depend on the host's mime.types.
_MIME_TYPES = mimetypes.MimeTypes()
_EXTENSIONS = {
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "message/feedback-report": ".txt",
    "text/rfc822-headers": ".txt",
    "text/plain": ".txt",
}


class _VerbatimHeaders(Compat32):
    """Writes headers back exactly as they were parsed, folding and raw bytes included.

    The stock policy re-encodes each header, which refolds it and refuses some that real
    mailers produce.
    """

    def fold_binary(self, name: str, value: str) -> bytes:
        return f"{name}: {value}{self.linesep}".encode("utf-8", "surrogateescape")


# Embedded messages are written back as they came: no refolding, no ">From " quoting.
_FLATTEN_POLICY = _VerbatimHeaders(mangle_from_=False)


class _RawValues(Compat32):
    """Hands header values back as parsed, raw 8-bit bytes still surrogate escapes."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_RAW_VALUES = _RawValues()


@dataclass
class _Collected:
    """What the walk over the MIME tree finds, accumulated part by part."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    # The charsets text parts declare or were found in, in order: hints for raw 8-bit headers.
    charsets: list[str] = field(default_factory=list)


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse raw RFC 5322 bytes; raise MessageParseError when nothing usable is in them."""
    if not raw.strip():
        raise MessageParseError("the message is empty")
    try:
        return _parse(raw)
    except RecursionError as exc:
        raise MessageParseError("the MIME structure is nested too deeply to parse") from exc


def _prepared(raw: bytes) -> tuple[bytes, list[str]]:
    """The raw mail as the email package can read it within bounds, and what was changed: the
    header block bounded and repaired, the parts counted off."""
    raw, bounded = bound_header_block(raw)
    raw, repairs = repair_header_block(raw)
    raw, cut = bound_parts(raw)
    return raw, [*repairs, *(note for note in (bounded, cut) if note)]


def _parse(raw: bytes) -> ParsedMessage:
    raw, changes = _prepared(raw)
    message = _mime_tree(raw)
    collected = _walk(message)
    collected.defects.extend(changes)
    charsets = _mail_charsets(message, collected)
    headers, header_defects = _decoded_headers(message, charsets)
    _repair_address_headers(message, charsets)
    readings = _mail_parser(message)
    plain = "\n".join(collected.plain)
    html = "\n".join(collected.html)
    text = body_text(plain, html)
    if not headers and not text.strip() and not html and not collected.attachments:
        raise MessageParseError("the message has neither headers nor a body")
    date, date_defects = _date(readings, _first(headers, "date"))
    dropped: list[str] = []
    senders: list[str] = []  # their defects: after those of To and Cc, as the headers are read
    from_, reply_to, sender = _senders(readings, headers, senders)
    return ParsedMessage(
        message_id=_message_id(_first(headers, "message-id")),
        subject=" ".join((_first(headers, "subject") or "").split()),
        from_=from_,
        to=_mailboxes(readings, "to", dropped),
        cc=_mailboxes(readings, "cc", dropped),
        reply_to=reply_to,
        sender=sender,
        date=date,
        in_reply_to=message_ids(_every(headers, "in-reply-to")),
        references=message_ids(_every(headers, "references")),
        text=text,
        html=html,
        attachments=tuple(collected.attachments),
        headers=headers,
        return_path=_return_path(_first(headers, "return-path")),
        defects=_bounded(
            [
                *collected.defects,
                *header_defects,
                *_address_defects(readings),
                *dropped,
                *senders,
                *date_defects,
            ]
        ),
    )


# -- the MIME tree -------------------------------------------------------------------------

# The email package's parser handles a body one line at a time, and a 500 KB attachment is
# 6,600 lines of base64: about 4 ms, most of parsing a mail that carries one. Such a body is set
# aside before parsing, a one-line placeholder in its place, and put back joined into one line
# afterwards: only line breaks are removed, which base64 decoding ignores (the email package
# itself joins the lines before decoding). The tree is used only when every placeholder turns
# up, in order, as the whole of a part that the email package decodes as base64.
_SET_ASIDE_AT_LEAST = 4096  # bytes of base64 body; shorter ones cost little line by line
# All but a handful of the headers in real mail are spelled one of these two ways.
_TRANSFER_ENCODING_SPELLINGS = (b"\nContent-Transfer-Encoding:", b"\nContent-transfer-encoding:")
_BASE64_HEADER = re.compile(rb"\ncontent-transfer-encoding:[ \t]*base64[ \t]*\r?\n", re.IGNORECASE)
_HEADER_END = re.compile(rb"\n\r?\n")
# An attached message is kept byte for byte, so its bodies are never set aside. The usual
# spellings are skipped cheaply here; any other ends in the check, and a second parse.
_ATTACHED_MESSAGE = (b"essage/", b"rfc822-headers")


@dataclass(frozen=True)
class _SetAside:
    """Mail with long base64 bodies replaced by placeholders, and those bodies in order."""

    shortened: bytes
    marker: str  # random for each mail, so that no sender can write a placeholder
    bodies: list[str]


class _EndOfLineAtEnd:
    """The feedparser's ``NLCRE_eol``, searching the last two characters instead of all.

    The pattern is a line ending anchored at the end of the string, so it can only match there,
    but ``re`` tries every position: the feedparser runs it over each part's whole payload,
    about 2 ms for a 500 KB attachment.
    """

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern.pattern
        self._compiled = pattern

    def search(self, string: str) -> re.Match[str] | None:
        return self._compiled.search(string[-2:])


def _speed_up_feedparser() -> None:
    current = getattr(feedparser, "NLCRE_eol", None)
    # Only the pattern this stands in for: another Python may have changed it.
    if isinstance(current, re.Pattern) and current.pattern == r"(\r\n|\r|\n)\Z":
        setattr(feedparser, "NLCRE_eol", _EndOfLineAtEnd(current))  # noqa: B010 - not typed


_speed_up_feedparser()


# The email package keeps every line of a body as a string of its own until the body is read:
# a 9 MB body of short lines took 30 times its size. A single-part mail's body is therefore
# taken aside whole, the headers parsed alone, and the body put back as its payload.
_WHOLE_BODY_AT_LEAST = 1 << 20  # bytes of mail; smaller ones cost little line by line


def _single_part_tree(raw: bytes) -> Message | None:
    """The tree of a big single-part mail, its body never split into lines; else None."""
    separator = _HEADER_END.search(raw) if len(raw) >= _WHOLE_BODY_AT_LEAST else None
    if separator is None:
        return None
    marker = secrets.token_hex(16)
    message = email.message_from_bytes(raw[: separator.end()] + marker.encode())
    # Only when the headers ended where they were looked for, and the body is one payload.
    if message.get_content_maintype() in ("multipart", "message") or message.is_multipart():
        return None
    if message.get_payload() != marker:
        return None
    message.set_payload(raw[separator.end() :].decode("ascii", "surrogateescape"))
    return message


def _mime_tree(raw: bytes) -> Message:
    whole = _single_part_tree(raw)
    if whole is not None:
        return whole
    aside = _set_aside_base64_bodies(raw)
    if aside.bodies and not any(kind in raw for kind in _ATTACHED_MESSAGE):
        message = email.message_from_bytes(aside.shortened)
        if _put_back(message, aside):
            return message
    return email.message_from_bytes(raw)


def _set_aside_base64_bodies(raw: bytes) -> _SetAside:
    """A body runs to the next line starting with "-" (a boundary does; base64 has no "-")."""
    marker = secrets.token_hex(16)
    pieces: list[bytes] = []
    bodies: list[str] = []
    copied = 0
    for found in _transfer_encoding_headers(raw):
        if found < copied or not _BASE64_HEADER.match(raw, found):
            continue
        separator = _HEADER_END.search(raw, found)
        if separator is None:
            break
        start = separator.end()
        end = raw.find(b"\n-", start) + 1 or len(raw)
        line = raw[start:end].translate(None, b"\r\n")
        if len(line) < _SET_ASIDE_AT_LEAST:
            continue
        kept = end
        while kept > start and raw[kept - 1] in b"\r\n":
            kept -= 1  # the line breaks after the body are kept as they were
        pieces += [raw[copied:start], _placeholder(marker, len(bodies)).encode()]
        bodies.append(line.decode("ascii", "surrogateescape"))
        copied = kept
    if not bodies:
        return _SetAside(raw, marker, bodies)
    pieces.append(raw[copied:])
    return _SetAside(b"".join(pieces), marker, bodies)


def _transfer_encoding_headers(raw: bytes) -> Iterator[int]:
    """Where lines that may be Content-Transfer-Encoding headers start, in order.

    Found with ``find`` on the usual spellings, which skips ahead in C: a case-insensitive
    pattern scanning the whole message cost as much as the parse this is meant to spare. A
    spelling missed here only leaves that body to be parsed line by line.
    """
    upcoming = {name: raw.find(name) for name in _TRANSFER_ENCODING_SPELLINGS}
    while upcoming:
        name, found = min(upcoming.items(), key=lambda item: item[1])
        if found < 0:
            del upcoming[name]
            continue
        yield found
        upcoming[name] = raw.find(name, found + 1)


def _placeholder(marker: str, number: int) -> str:
    return f"{marker}.{number}."


def _put_back(message: Message, aside: _SetAside) -> bool:
    """Put each body back in its part; False unless each is, in order, a part decoded as base64.

    Anything else (a body that only looked like one, an attached message) means the tree must
    come from the unchanged bytes.
    """
    parts = _base64_leaves(message)
    if parts is None:
        return False
    waiting = iter(enumerate(aside.bodies))
    number, body = next(waiting, (-1, ""))
    for part in parts:
        placeholder = _placeholder(aside.marker, number)
        payload = str(part.get_payload())
        if number >= 0 and payload.startswith(placeholder):
            rest = payload[len(placeholder) :]
            if rest.strip("\r\n"):
                return False
            part.set_payload(body + rest)
            number, body = next(waiting, (-1, ""))
    return number < 0


def _base64_leaves(message: Message) -> list[Message] | None:
    """The leaves the email package decodes as base64, in order; None if a message is attached.

    None too past MAX_NESTING, where ``_walk`` gives its own reason for refusing the mail.
    """
    found: list[Message] = []
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_NESTING or _is_embedded(part.get_content_type()):
            return None
        payload = part.get_payload()
        if isinstance(payload, list):
            children = [child for child in payload if isinstance(child, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))
        # The email package's own test before it decodes base64.
        elif str(part.get("content-transfer-encoding", "")).lower() == "base64":
            found.append(part)
    return found


def _walk(message: Message) -> _Collected:
    """Collect body text and attachments depth-first, without recursion."""
    collected = _Collected()
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_NESTING:
            raise MessageParseError(f"the MIME structure is nested more than {MAX_NESTING} deep")
        content_type = _content_type(part)
        if depth and _is_embedded(content_type):
            # A returned or forwarded message belongs to its sender, not to this mail's body.
            collected.attachments.append(_embedded_attachment(part, content_type, collected))
        elif part.is_multipart():
            children = list(_children(part))
            stack.extend((child, depth + 1) for child in reversed(children))
        else:
            _leaf(part, content_type, collected)
        # Read after decoding: undoing the transfer encoding can add defects.
        collected.defects.extend(f"{content_type}: {type(d).__name__}" for d in part.defects)
    return collected


def _content_type(part: Message) -> str:
    declared = part.get_content_type()
    if _TYPE_TOKEN.fullmatch(declared):
        return declared
    # "text/plain charset=..." (a missing semicolon) still says what the part is.
    match = _TYPE_TOKEN.match(declared)
    return match.group() if match else part.get_default_type()


def _charset(part: Message) -> str | None:
    charset = part.get_content_charset()
    if charset is None:
        match = _CHARSET_PARAMETER.search(str(part.get("content-type", "")))
        charset = match.group(1) if match else None
    return charset


def _is_embedded(content_type: str) -> bool:
    return content_type.startswith("message/") or content_type == "text/rfc822-headers"


def _children(part: Message) -> Iterator[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        yield from (child for child in payload if isinstance(child, Message))


def _leaf(part: Message, content_type: str, collected: _Collected) -> None:
    if content_type.startswith("multipart/"):
        # A multipart without a usable boundary: its raw text is all a reader could see.
        content_type = "text/plain"
    charset = _charset(part)
    if charset and content_type.startswith("text/"):
        collected.charsets.append(charset)
    filename = _declared_filename(part, collected)
    disposition = part.get_content_disposition()
    is_body_type = content_type in _BODY_TYPES
    # mail-parser's rule, widened so that no non-text part is dropped: a part is a file when it
    # is named, marked as an attachment, or not body text at all.
    attached = filename is not None or disposition == "attachment" or not is_body_type
    data = decoded_payload(part)
    if attached and (data or filename):
        name = filename or _content_id_name(part) or ""
        collected.attachments.append(
            Attachment(safe_filename(name, content_type), content_type, data)
        )
    # Named inline text is both shown and kept as a file, as mail-parser does.
    if is_body_type and (not attached or disposition == "inline"):
        _add_body_text(data, charset, content_type, collected)


def _add_body_text(data: bytes, charset: str | None, content_type: str, out: _Collected) -> None:
    decoded = decode_part_text(data, charset)
    if decoded.defect:
        out.defects.append(f"{content_type}: {decoded.defect}")
    if not data.isascii():
        out.charsets.append(decoded.codec)  # what undeclared text turned out to be, too
    text = _normalise_newlines(decoded.text)
    if content_type == "text/html":
        out.html.append(text)
        return
    text, files = extract_uuencoded(text)
    for found in files:
        kind = _MIME_TYPES.guess_type(found.name)[0] or "application/octet-stream"
        out.attachments.append(Attachment(safe_filename(found.name, kind), kind, found.content))
    out.plain.append(text)


def _content_id_name(part: Message) -> str | None:
    """The file name an image's Content-ID carries, as Outlook writes it: ``image001.jpg``
    from ``<image001.jpg@01D9A1B2.C3D4E5F0>``; None when it names no file."""
    content_id = str(part.get("content-id", "")).strip().strip("<>")
    name = content_id.partition("@")[0].strip()
    return name if name and _MIME_TYPES.guess_type(name)[0] else None


def decoded_payload(part: Message) -> bytes:
    """The bytes of a leaf MIME part with its transfer encoding undone."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return b""
    if any(isinstance(defect, InvalidBase64LengthDefect) for defect in part.defects):
        # The email package gave up and returned the base64 text itself.
        return _decode_base64(data)
    return data


def _decode_base64(data: bytes) -> bytes:
    """Decode base64 the way mail clients do, so a damaged file still opens.

    The email package hands back the encoded text when the length is off by one character;
    a client drops that character (and anything after the padding) and shows the file.
    """
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        cleaned = _NOT_BASE64.sub(b"", data.split(b"=", 1)[0])
        cleaned = cleaned[: len(cleaned) - (len(cleaned) % 4 == 1)]
        return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))


def _embedded_attachment(part: Message, content_type: str, collected: _Collected) -> Attachment:
    name = _declared_filename(part, collected) or ""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return Attachment(safe_filename(name, content_type), content_type, decoded_payload(part))
    try:
        data = b"".join(_flatten(inner) for inner in payload if isinstance(inner, Message))
    except (LookupError, UnicodeError, TypeError, ValueError, MessageError) as exc:
        collected.defects.append(f"{content_type}: not re-serialisable ({type(exc).__name__})")
        data = b""
    return Attachment(safe_filename(name, content_type), content_type, _undo_encoding(part, data))


def _undo_encoding(part: Message, data: bytes) -> bytes:
    """An attached message sent base64 or quoted-printable (RFC 2046 forbids it, clients do it).

    The email package still parses such a part as a message whose text is the encoded form,
    so the flattened bytes are decoded here to give back the message that was attached.
    """
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding == "base64":
        return _decode_base64(data.strip())
    if encoding == "quoted-printable":
        return quopri.decodestring(data.lstrip(b"\r\n"))
    return data


def _flatten(message: Message) -> bytes:
    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False, policy=_FLATTEN_POLICY).flatten(message)
    return buffer.getvalue()


def _declared_filename(part: Message, collected: _Collected) -> str | None:
    name = _with_raw_bytes(part).get_filename()
    if name is None:
        return None
    # Raw 8-bit bytes are read as in a subject: UTF-8, else the part's charset or the body's,
    # else detected on the name alone.
    own = _charset(part)
    decoded = decode_header(str(name), (*([own] if own else []), *collected.charsets))
    if decoded.defect:
        collected.defects.append(f"attachment filename: {decoded.defect}")
    return decoded.text


def _with_raw_bytes(part: Message) -> Message:
    """The part, or a copy of the headers naming it whose values keep their raw 8-bit bytes.

    Some clients write a UTF-8 or cp1251 name straight into Content-Disposition, and the
    email package's policy turns each such byte into U+FFFD before a parameter can be read.
    """
    naming = [(k, v) for k, v in part.raw_items() if k.strip().lower() in _NAMING_HEADERS]
    if all(str(value).isascii() for _, value in naming):
        return part
    copy = Message(policy=_RAW_VALUES)
    for name, value in naming:
        copy[name] = value
    return copy


def safe_filename(name: str, content_type: str) -> str:
    """A sender's file name made harmless for display (never for building a path).

    Only the last path component survives; control and bidirectional-override characters and
    dot runs are removed; the length is bounded, keeping the extension. An empty result becomes
    "attachment" with an extension guessed from the content type.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _DOT_RUN.sub(".", _FILENAME_JUNK.sub("", base)).strip(" .")
    if len(base) > MAX_FILENAME:
        stem, dot, extension = base.rpartition(".")
        if dot and 0 < len(extension) <= 16 and stem:
            base = f"{stem[: MAX_FILENAME - len(extension) - 1]}.{extension}"
        else:
            base = base[:MAX_FILENAME]
    if base:
        return base
    guessed = _EXTENSIONS.get(content_type) or _MIME_TYPES.guess_extension(content_type)
    return f"attachment{guessed or ''}"


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


# -- headers -------------------------------------------------------------------------------


def _decoded_headers(
    message: Message, fallback: tuple[str, ...]
) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    headers: list[tuple[str, str]] = []
    defects: list[str] = []
    for name, value in message.raw_items():
        decoded = decode_header(str(value), fallback)
        key = name.strip()
        if decoded.defect:
            defects.append(f"{key}: {decoded.defect}")
        headers.append((key, decoded.text))
    return tuple(headers), defects


def _mail_charsets(message: Message, collected: _Collected) -> tuple[str, ...]:
    """Every charset the mail names or its text was found in: its parts' first, in order, then
    those of its encoded words. Raw 8-bit headers are most likely in one of them."""
    found = dict.fromkeys(collected.charsets)
    for _, value in message.raw_items():
        if "=?" in str(value):
            found.update(dict.fromkeys(_ENCODED_WORD_CHARSET.findall(str(value))))
    return tuple(found)


def _first(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key.lower() == name), None)


def _every(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name]


def _repair_address_headers(message: Message, fallback: tuple[str, ...]) -> None:
    """Give mail-parser address headers as text, leaving encoded words for it to decode.

    Order among headers does not matter to mail-parser; ParsedMessage.headers already holds
    the original order.
    """
    broken = {
        name.strip().lower()
        for name, value in message.raw_items()
        if name.strip().lower() in _ADDRESS_HEADERS and not str(value).isascii()
    }
    for name in broken:
        values = [
            decode_raw_header(str(value), fallback).text
            for key, value in message.raw_items()
            if key.strip().lower() == name
        ]
        del message[name]
        for value in values:
            message[name] = value


@dataclass(frozen=True)
class _Readings:
    """What mail-parser reads in the top-level headers: the mailboxes and the date."""

    mailboxes: dict[str, list[tuple[str, str]]]  # each address header's first occurrence
    address_defects: list[dict[str, Any]]
    date: datetime | None
    date_defects: list[dict[str, Any]]  # the first Date header's


def _mail_parser(message: Message) -> _Readings:
    """mail-parser's address and date readers over the top-level headers.

    Its MailParser object would also walk every part and decode every header twice more, which
    cost as much as the reading itself; the body is read once, by ``_walk``.
    """
    try:
        return _read_with_mail_parser(message)
    except RecursionError:
        raise
    except Exception as exc:
        raise MessageParseError(f"mail-parser cannot read the message ({exc!r:.200})") from exc


def _read_with_mail_parser(message: Message) -> _Readings:
    values: dict[str, list[Any]] = {}
    for name, value in message.items():
        if name.lower() in _READ_ADDRESSES:
            values.setdefault(name.lower(), []).append(value)
    mailboxes: dict[str, list[tuple[str, str]]] = {}
    address_defects: list[dict[str, Any]] = []
    for header, occurrences in sorted(values.items()):  # mail-parser's order
        for occurrence, value in enumerate(occurrences):
            diagnostics: list[dict[str, Any]] = []
            found = get_addresses(value, defects=diagnostics, decode_names=True)
            mailboxes.setdefault(header, found)
            address_defects += [
                {**d, "header": header, "occurrence": occurrence} for d in diagnostics
            ]
    dated = next((raw for name, raw in message.raw_items() if name.lower() == "date"), None)
    if dated is None:
        return _Readings(mailboxes, address_defects, None, [])
    reading = parse_mail_date(dated)
    return _Readings(
        mailboxes, address_defects, reading.value, date_diagnostics(reading, dated, "date", 0)
    )


def _addresses(readings: _Readings, header: str) -> tuple[Address, ...]:
    found: dict[str, Address] = {}
    for name, address in readings.mailboxes.get(header) or ():
        email_address = _WHITESPACE.sub("", str(address)).lower()
        if email_address and email_address not in found:
            found[email_address] = Address(email_address, _display_name(str(name), email_address))
    return tuple(found.values())


def _senders(
    readings: _Readings, headers: tuple[tuple[str, str], ...], defects: list[str]
) -> tuple[Address | None, tuple[Address, ...], Address | None]:
    """From, Reply-To and Sender; each recovered from its value when mail-parser reads none.

    From is kept even when unusable: the pipeline looks for another sender, or refuses the
    mail rather than answer someone else.
    """
    from_ = _addresses(readings, "from") or _recovered(readings, headers, "from", defects)
    reply_to = _mailboxes(readings, "reply-to", defects) or tuple(
        a
        for a in _recovered(readings, headers, "reply-to", defects)
        if address_problem(a.email) is None
    )
    sender = _addresses(readings, "sender") or _recovered(readings, headers, "sender", defects)
    return (from_[0] if from_ else None), reply_to, (sender[0] if sender else None)


def _recovered(
    readings: _Readings, headers: tuple[tuple[str, str], ...], header: str, defects: list[str]
) -> tuple[Address, ...]:
    """The mailbox of a header mail-parser found none in (``<power quadrant system@...>``)."""
    value = _first(headers, header)
    if _addresses(readings, header) or not value:
        return ()
    recovered = recover_mailbox(value)
    if recovered is None:
        return ()
    defects.append(f"{header}: read as {recovered.email!r:.100}")
    return (recovered,)


def _mailboxes(readings: _Readings, header: str, dropped: list[str]) -> tuple[Address, ...]:
    """The header's addresses that can be someone's mailbox; each other one is a defect.

    One junk address copied on a customer's mail must not cost the customer the mail.
    """
    kept: list[Address] = []
    for address in _addresses(readings, header):
        problem = address_problem(address.email)
        if problem is None:
            kept.append(address)
        else:
            dropped.append(f"{header}: {address.email!r:.80} left out: {problem}")
    return tuple(kept)


def _display_name(name: str, email_address: str) -> str:
    # mail-parser keeps quoted encoded words literal, but mailers quote them all the time.
    text = decode_encoded_words(name).text if "=?" in name else name
    # An encoded NUL or escape is no part of a name, and PostgreSQL cannot store a NUL.
    text = " ".join(_CONTROL.sub("", text).split())
    return "" if text.lower() == email_address else text


def _address_defects(readings: _Readings) -> list[str]:
    return [
        f"{item.get('header', 'address')}: {item.get('reason')} in {item.get('raw', '')!s:.200}"
        for item in readings.address_defects
    ]


def _date(readings: _Readings, header: str | None) -> tuple[datetime | None, list[str]]:
    defects = [f"Date: {item.get('reason')}" for item in readings.date_defects]
    value = readings.date
    if isinstance(value, datetime):
        return _as_utc(value), defects
    if not header:
        return None, defects
    # mail-parser is strict; the stdlib still reads what old mailers write: no comma after the
    # weekday, a three-digit day, no zone at all.
    try:
        return _as_utc(email.utils.parsedate_to_datetime(header)), defects
    except (TypeError, ValueError, IndexError, OverflowError):
        return None, [*defects, f"Date: unparseable {header!r:.100}"]


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _message_id(value: str | None) -> str:
    if not value:
        return ""
    ids = message_ids([value])
    return ids[0] if ids else bounded_message_id(_WHITESPACE.sub("", value))


def message_ids(values: Iterable[str]) -> tuple[str, ...]:
    """Message ids from In-Reply-To / References values, in order, without duplicates.

    Bracketed ids are taken when a value has any (whitespace inside removed, as folding
    mailers insert it); otherwise anything shaped like local@domain, which covers commas,
    missing brackets and surrounding garbage. An id too long to store is bounded the way the
    mail's own Message-ID is, so a reply still finds the message it refers to.
    """
    found: dict[str, None] = {}
    for value in values:
        bracketed = [_WHITESPACE.sub("", inner) for inner in _BRACKETED_ID.findall(value)]
        for message_id in [i for i in bracketed if i] or _BARE_ID.findall(value):
            found.setdefault(bounded_message_id(message_id), None)
    return tuple(found)


def _return_path(value: str | None) -> str | None:
    if value is None:
        return None
    match = _BRACKETED_ID.search(value)
    address = match.group(1) if match else value
    return _WHITESPACE.sub("", address).lower()


def _bounded(defects: list[str]) -> tuple[str, ...]:
    unique = list(dict.fromkeys(defects))
    if len(unique) <= MAX_DEFECTS:
        return tuple(unique)
    return (*unique[:MAX_DEFECTS], f"... and {len(unique) - MAX_DEFECTS} more defects")
