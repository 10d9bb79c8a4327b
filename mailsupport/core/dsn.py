"""Read a delivery failure report into plain values: who failed, for good or not, and why.

Mail we send carries a per-message bounce address, so a report that comes back already names
the outbox row; what it must still tell us is which recipient failed, whether the failure is
permanent, and the Message-ID of the mail it returns. RFC 3464 reports say so in fields and are
read first. Many mail servers still answer in prose (qmail, Exim, old Sendmail, Exchange, Lotus
Notes, Japanese carriers...), so the patterns those have used for decades come next, always
preferring what the report says over the copy of our own mail it quotes.

Everything here is pure and bounded: a huge or hostile message costs a fixed amount of work,
and no input makes ``parse_bounce`` raise.
"""

from __future__ import annotations

import binascii
import email
import enum
import json
import quopri
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from email.message import Message
from email.utils import getaddresses
from typing import Any

from mailsupport.core.charsets import codec_for, decode_header
from mailsupport.core.htmltext import html_to_text

# Reports are small; whatever lies past these limits is the returned mail or an attack.
MAX_BYTES = 1_000_000
MAX_RECIPIENTS = 200
MAX_DIAGNOSTIC = 300
_MAX_PARTS = 200
_MAX_DEPTH = 12
_MAX_REPORT_CHARS = 100_000
_MAX_LINES = 5_000


class Severity(enum.StrEnum):
    HARD = "hard"  # the address does not work: stop mailing it
    SOFT = "soft"  # delayed or refused for now: the mail may still arrive or a retry succeed


@dataclass(frozen=True)
class FailedRecipient:
    address: str  # lower-cased addr-spec, "" when the report does not say
    severity: Severity
    status: str  # enhanced status code such as "5.1.1", "" when unknown
    diagnostic: str  # one line, at most MAX_DIAGNOSTIC characters


@dataclass(frozen=True)
class BounceReport:
    recipients: tuple[FailedRecipient, ...]
    original_message_id: str  # without angle brackets, "" when unknown
    original_recipients: tuple[str, ...]  # To and Cc of the returned mail, when it is quoted
    reporting_mta: str
    structured: bool  # read from an RFC 3464 (or RFC 6533) delivery-status part


def parse_bounce(raw: bytes) -> BounceReport | None:
    """The failures reported by ``raw``; None when it is not a bounce or says nothing usable."""
    try:
        return _parse(raw)
    except Exception:
        # The email package has failure modes on hostile input that no list of exception types
        # covers; a report that cannot be read says nothing usable, it never stops the caller.
        return None


# --------------------------------------------------------------------------- MIME structure

_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ORIGINAL_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/rfc822-headers",
        "text/rfc822-header",
        "message/global-headers",
        "message/partial",  # Bigfoot returns the headers as a fragment
    }
)
# Abuse reports and read receipts share multipart/report with DSNs but report no failure.
_NOT_BOUNCE_TYPES = frozenset({"message/feedback-report", "message/disposition-notification"})


@dataclass
class _Parts:
    """The parts of a report that matter, collected in one bounded walk."""

    statuses: list[Message] = field(default_factory=list)
    originals: list[Message] = field(default_factory=list)
    plain: list[Message] = field(default_factory=list)
    html: list[Message] = field(default_factory=list)
    not_bounce: bool = False


def _parse(raw: bytes) -> BounceReport | None:
    message = email.message_from_bytes(_normalise_newlines(raw[:MAX_BYTES]))
    parts = _walk(message)
    if parts.not_bounce:
        return None
    report, tail = _split_report(_report_text(parts))
    original = _original(parts, report, tail, message)
    mta = _reporting_mta(parts, report, message)
    blocks = _status_blocks(parts)
    failures = _unique(_dsn_failure(block) for block in blocks)
    if blocks and not failures:
        return None  # a success notice: delivered, relayed or expanded
    if failures:
        if not any(failure.address for failure in failures):
            failures = _with_prose_addresses(failures, message, report, original)
        return _report(failures, original, mta, structured=True)
    notification = _ses_notification(report)
    if notification is not None:
        return notification
    failures = _prose_failures(message, report, original)
    return _report(failures, original, mta, structured=False) if failures else None


def _normalise_newlines(raw: bytes) -> bytes:
    """CRLF and bare CR files become LF, the one form every later pattern has to expect."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _walk(message: Message) -> _Parts:
    """Report parts in document order; the returned mail is kept whole, never descended into."""
    parts = _Parts()
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        content_type = part.get_content_type()
        if content_type in _STATUS_TYPES:
            parts.statuses.append(part)
        elif content_type in _ORIGINAL_TYPES:
            parts.originals.append(part)
        elif content_type in _NOT_BOUNCE_TYPES:
            parts.not_bounce = True
        elif part.is_multipart():
            if depth < _MAX_DEPTH:
                children = [child for child in part.get_payload() if isinstance(child, Message)]
                stack.extend((child, depth + 1) for child in reversed(children))
        elif depth > 0 and _is_headers_only_copy(part):
            parts.originals.append(part)
        elif content_type == "text/html":
            parts.html.append(part)
        elif content_type.startswith(("text/", "multipart/")) or depth == 0:
            # A multipart whose boundary is missing arrives as one blob: read it as prose.
            parts.plain.append(part)
    return parts


def _is_headers_only_copy(part: Message) -> bool:
    """A part whose own header section is the returned mail's.

    Some servers attach the copy as a part without a header block of its own, so the email
    package reads the copy's headers as the part's; no ordinary MIME part has these.
    """
    return "Received" in part or ("Message-ID" in part and "From" in part)


def _payload_text(part: Message) -> str:
    """A part's text, transfer encoding undone and decoded in its declared charset."""
    payload = part.get_payload()
    if isinstance(payload, list):
        text = "\n\n".join(_fields_text(child) for child in payload if isinstance(child, Message))
        return _without_transfer_encoding(text, part)
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return payload if isinstance(payload, str) else ""
    return _decode(data, part.get_content_charset())


def _without_transfer_encoding(text: str, part: Message) -> str:
    """Undo the transfer encoding of a message/* part the email package parsed as it was.

    RFC 6533 lets message/global-delivery-status travel base64 encoded; the email package
    parses the encoded text as if it were fields.
    """
    encoding = _raw_header(part, "Content-Transfer-Encoding").strip().lower()
    data = text.encode("utf-8", "surrogateescape")
    try:
        if encoding == "base64":
            return binascii.a2b_base64(data).decode("utf-8", "replace")
        if encoding == "quoted-printable":
            return quopri.decodestring(data).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return text
    return text


def _fields_text(block: Message) -> str:
    """One block the email package split off a delivery-status part, back as field lines."""
    lines = [f"{name}: {_raw_str(value)}" for name, value in block.raw_items()]
    payload = block.get_payload(decode=True)
    if isinstance(payload, bytes) and payload.strip():
        # A line the email package could not read as a field ends its header section, and it
        # reads message/global-delivery-status as one block with the rest as its body. What
        # follows belongs to the same report, so it is put back where it was.
        lines.append(payload.decode("utf-8", "replace"))
    return "\n".join(lines)


def _raw_str(value: object) -> str:
    """A header value as text; raw 8-bit bytes are read as UTF-8."""
    text = str(value)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _raw_values(message: Message, name: str) -> list[str]:
    """Every value of a header, raw 8-bit bytes read as UTF-8 (RFC 6532 addresses).

    ``get`` would already have replaced those bytes; ``raw_items`` still has them.
    """
    wanted = name.lower()
    return [_raw_str(value) for key, value in message.raw_items() if key.lower() == wanted]


def _raw_header(message: Message, name: str) -> str:
    values = _raw_values(message, name)
    return values[0] if values else ""


def _decode(data: bytes, charset: str | None) -> str:
    codec = codec_for(charset) or "utf-8"
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return data.decode("utf-8", "replace")


def _header(message: Message, name: str) -> str:
    """A header decoded for reading: encoded words and raw 8-bit text."""
    return decode_header(_raw_header(message, name)).text


# --------------------------------------------------------------------------- RFC 3464 fields

_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9-]{0,60})[ \t]*:[ \t]*(.*)")
_RECIPIENT_FIELDS = ("final-recipient", "original-recipient", "x-actual-recipient")
# "deliverable" is what Postfix answers to an address verification request (sendmail -bv).
_NOT_FAILED = frozenset({"delivered", "relayed", "expanded", "deliverable"})


def _field_blocks(text: str) -> list[dict[str, str]]:
    """Field blocks separated by blank lines, names lower-cased, continuation lines unfolded.

    Some servers leave out the blank line between two recipients, so a field that repeats
    within a block starts the next recipient.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines()[:_MAX_LINES]:
        if not line.strip():
            current, last = _flush(blocks, current), ""
        elif line[0] in " \t":
            if last:
                current[last] = f"{current[last]} {line.strip()}"
        elif (match := _FIELD.fullmatch(line)) is not None:
            name = match.group(1).lower()
            if name in _RECIPIENT_FIELDS[:2] and name in current:
                current = _flush(blocks, current)
            last = "" if name in current else name
            current.setdefault(name, match.group(2).strip())
        else:
            last = ""
    _flush(blocks, current)
    return blocks


def _flush(blocks: list[dict[str, str]], current: dict[str, str]) -> dict[str, str]:
    if current:
        blocks.append(current)
    return {}


def _recipient_blocks(blocks: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    return [
        block
        for block in blocks
        if any(name in block for name in _RECIPIENT_FIELDS) or {"action", "status"} <= set(block)
    ]


def _status_blocks(parts: _Parts) -> list[dict[str, str]]:
    """The per-recipient field blocks of every delivery-status part."""
    blocks: list[dict[str, str]] = []
    for part in parts.statuses:
        blocks.extend(_recipient_blocks(_field_blocks(_payload_text(part))))
    return blocks


def _dsn_failure(block: dict[str, str]) -> FailedRecipient | None:
    action = block.get("action", "").strip().lower().split(" ", 1)[0].rstrip(";")
    diagnostic = _without_type(block.get("diagnostic-code", ""))
    status = _status(block.get("status", "")) or _status(diagnostic)
    severity = _dsn_severity(action, status, diagnostic)
    if severity is None:
        return None
    address = next(
        (found for name in _RECIPIENT_FIELDS if (found := _field_address(block.get(name, "")))),
        "",
    )
    return FailedRecipient(address, severity, status, _one_line(diagnostic))


def _dsn_severity(action: str, status: str, diagnostic: str) -> Severity | None:
    if action in _NOT_FAILED:
        return None
    if action == "failed":
        # RFC 3464: the MTA gave up, however temporary the last reply (Postfix's 4.4.7 after
        # its queue lifetime): nothing will try again.
        return Severity.HARD
    if action == "delayed" or status.startswith("4"):
        return Severity.SOFT
    if status.startswith("5"):
        return Severity.HARD
    if status.startswith("2"):
        return None
    return _code_severity(diagnostic) or Severity.HARD


def _without_type(value: str) -> str:
    """``rfc822; kijitora@example.jp`` without its type, as in every typed DSN field."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and " " not in kind.strip() else value.strip()


_WHOLE_ADDRESS = re.compile(r"[^\s<>@]{1,256}@[^\s<>@]{1,255}")


def _field_address(value: str) -> str:
    """The address of a recipient field; RFC 6533 allows UTF-8 and quoted local parts."""
    bare = _without_type(value).strip().strip("<>")
    if _WHOLE_ADDRESS.fullmatch(bare) and "." in bare.rpartition("@")[2]:
        return bare.lower()
    return _first_address(bare)


# --------------------------------------------------------------------------- status codes

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d])")
_REPLY_CODE = re.compile(r"(?<![\w.:/#+=-])([45])[0-5]\d(?=[ -]|$)", re.MULTILINE)


def _status(text: str) -> str:
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else ""


def _code_severity(text: str) -> Severity | None:
    """Severity from the first failure reply or enhanced code in ``text``, if there is one."""
    enhanced = _ENHANCED.search(text)
    reply = _REPLY_CODE.search(text)
    first = min(
        (m for m in (enhanced, reply) if m is not None and m.group(1) != "2"),
        key=lambda m: m.start(),
        default=None,
    )
    if first is None:
        return None
    return Severity.SOFT if first.group(1) == "4" else Severity.HARD


# --------------------------------------------------------------------------- addresses

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]"
# Starts only where a local part can start, so a long run of text is scanned once rather than
# once per position. Dots may repeat: Japanese carriers still hold such addresses.
_ADDRESS = re.compile(
    rf"(?<!{_ATOM}){_ATOM}{{1,64}}@[A-Za-z0-9][A-Za-z0-9-]{{0,62}}"
    r"(?:\.[A-Za-z0-9][A-Za-z0-9-]{0,62}){0,10}\.[A-Za-z]{2,24}(?![A-Za-z0-9_-])"
)
_DAEMON = re.compile(r"mailerdaemon|maildaemon|postmaster|maildelivery|doublebounce")


def _first_address(text: str) -> str:
    match = _ADDRESS.search(text)
    return match.group().strip(".").lower() if match else ""


def _header_addresses(message: Message, *names: str) -> list[str]:
    values = [value for name in names for value in _raw_values(message, name)]
    found = [address.lower() for _, address in getaddresses(values) if "@" in address]
    return found or [address for value in values if (address := _first_address(value))]


def _is_daemon(address: str) -> bool:
    local = re.sub(r"[-_.]", "", address.partition("@")[0].lower())
    return bool(_DAEMON.fullmatch(local))


# --------------------------------------------------------------------------- the returned mail

_MESSAGE_ID = re.compile(r"<([^<>\s]{1,900})>")
_QUOTED_MESSAGE_ID = re.compile(
    r"^[ \t>]*Message-ID[ \t]*:[ \t]*(?:\n[ \t]+)?(\S.*)$", re.MULTILINE | re.IGNORECASE
)


@dataclass(frozen=True)
class _Original:
    message_id: str
    recipients: tuple[str, ...]
    senders: frozenset[str]  # who sent it: never the recipient that failed


def _original(parts: _Parts, report: str, tail: str, bounce: Message) -> _Original:
    """The returned mail: an attached copy first, then one quoted in the report's text."""
    for part in parts.originals:
        headers = _original_headers(part)
        if headers is not None and len(headers):
            return _original_from(headers, bounce, "")
    quoted = _quoted_headers(tail)
    if quoted is not None and len(quoted):
        return _original_from(quoted, bounce, tail)
    message_id = _quoted_message_id(tail) or _quoted_message_id(report) or _reply_to_id(bounce)
    return _Original(message_id, (), frozenset())


def _original_headers(part: Message) -> Message | None:
    if _is_headers_only_copy(part):
        return part
    payload = part.get_payload()
    if isinstance(payload, list):
        child = next((child for child in payload if isinstance(child, Message)), None)
        if child is None or len(child):
            return child
        # A blank line before the copy leaves it in the body of a header-less message.
        payload = child.get_payload(decode=True)
        text = payload.decode("utf-8", "replace").lstrip() if isinstance(payload, bytes) else ""
    else:
        text = _payload_text(part).lstrip()
    return email.message_from_string(text) if text else None


def _original_from(headers: Message, bounce: Message, tail: str) -> _Original:
    message_id = _message_id(_raw_header(headers, "Message-ID")) or _quoted_message_id(tail)
    recipients = _header_addresses(headers, "To", "Cc")
    senders = _header_addresses(headers, "From", "Sender", "Return-Path")
    return _Original(
        message_id or _reply_to_id(bounce),
        tuple(dict.fromkeys(recipients))[:MAX_RECIPIENTS],
        frozenset(senders),
    )


def _message_id(value: str) -> str:
    match = _MESSAGE_ID.search(value)
    if match:
        return match.group(1)
    words = value.split()
    return words[0][:900] if words else ""


def _quoted_message_id(text: str) -> str:
    match = _QUOTED_MESSAGE_ID.search(text)
    return _message_id(match.group(1)) if match else ""


def _reply_to_id(bounce: Message) -> str:
    """Gmail and others send the report as a reply to the mail it returns."""
    ids = _MESSAGE_ID.findall(_raw_header(bounce, "In-Reply-To"))
    return ids[0] if len(ids) == 1 else ""


# --------------------------------------------------------------------------- report and copy


def _phrases(*phrases: str) -> str:
    """Alternatives whose spaces match any run of white space, line breaks included."""
    return "|".join(phrase.replace(" ", r"\s+") for phrase in phrases)


# Lines that introduce the copy of the returned mail.
_COPY_MARKER = re.compile(
    r"^[ \t]*[-=_*#>|]*[ \t]*(?:"
    + _phrases(
        r"(?:below (?:this line )?is |here is |this is |here's )?(?:a )?copy of (?:the|your)"
        r" (?:original )?message",
        r"(?:the )?original message(?: headers?)?(?: follows?| is attached| text)?\b",
        r"(?:the )?(?:unsent|returned|undelivered|undeliverable) message(?: follows)?",
        r"message (?:headers?|text) follows?",
        r"(?:the )?(?:headers?|text) of the (?:original|returned) message",
    )
    + r")[^\n]{0,60}$",
    re.IGNORECASE | re.MULTILINE,
)
# "The original message was received at ..." opens Sendmail's report; it is not the copy.
_NOT_A_COPY = re.compile(r"original message was received", re.IGNORECASE)
_HEADER_LINE = re.compile(r"([A-Za-z][A-Za-z0-9-]{0,60}):(?:[ \t]|$)")
# A quoted header section has one of the first set; reports often summarise the returned mail
# with To, Subject and Date alone, which must not end the report.
_STRONG_HEADERS = frozenset(
    {"received", "return-path", "message-id", "from", "mime-version", "dkim-signature"}
)
_ORIGINAL_HEADERS = _STRONG_HEADERS | frozenset(
    {
        "to",
        "cc",
        "subject",
        "date",
        "content-type",
        "content-transfer-encoding",
        "reply-to",
        "sender",
        "delivered-to",
        "x-mailer",
        "user-agent",
        "in-reply-to",
        "references",
    }
)


def _report_text(parts: _Parts) -> str:
    """The prose of the report, HTML only when there is no plain text, bounded in length."""
    texts = [_payload_text(part) for part in parts.plain]
    if not any(text.strip() for text in texts):
        texts = [html_to_text(_payload_text(part)[:_MAX_REPORT_CHARS]) for part in parts.html]
    return "\n\n".join(texts)[:_MAX_REPORT_CHARS]


def _split_report(text: str) -> tuple[str, str]:
    """The report itself, and the quoted copy of the returned mail that follows it."""
    lines = text.splitlines()[:_MAX_LINES]
    cut = min(_marker_line(lines), _header_block_line(lines))
    return "\n".join(lines[:cut]), "\n".join(lines[cut:])


def _marker_line(lines: list[str]) -> int:
    for index, line in enumerate(lines):
        if _COPY_MARKER.match(line) and not _NOT_A_COPY.search(line):
            return index
    return len(lines)


def _header_block_line(lines: list[str]) -> int:
    """Where the first run of lines that reads like a mail's header section starts."""
    start, names = -1, set[str]()
    for index, line in enumerate([*lines, ""]):
        match = _HEADER_LINE.match(line)
        if match is not None:
            start = index if start < 0 else start
            names.add(match.group(1).lower())
        elif start >= 0 and line[:1] in (" ", "\t") and line.strip():
            continue
        elif start >= 0:
            if len(names & _ORIGINAL_HEADERS) >= 2 and names & _STRONG_HEADERS:
                return start
            start, names = -1, set()
    return len(lines)


def _quoted_headers(tail: str) -> Message | None:
    """The header section of the copy quoted after the report, from its first header line."""
    lines = tail.splitlines()
    start = next((i for i, line in enumerate(lines) if _HEADER_LINE.match(line)), None)
    if start is None:
        return None
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return email.message_from_string("\n".join(lines[start:end]) + "\n\n")


# --------------------------------------------------------------------------- prose reports

# qmail, Postfix without a DSN, Yahoo...: "<kijitora@example.jp>:" opening a line.
_ANGLE_COLON = re.compile(r"^[ \t]*<(?P<address>[^\s<>]{1,320})>:", re.MULTILINE)
_RCPT_TO = re.compile(r"RCPT[ \t]+TO[ \t]*:[ \t]*<?(?P<address>[^\s<>]{1,320})", re.IGNORECASE)
# An address opening a line: bare, bracketed or after a short display name (Exim, Sendmail,
# Exchange, Lotus Notes, carriers).
_LISTED = re.compile(
    r"^[ \t]*(?:[*\u2022-]{1,2}[ \t]+)?"
    r"(?:\"[^\"\n]{0,80}\"[ \t]*|[A-Za-z][\w'.-]{0,30}(?:[ \t]+[A-Za-z][\w'.-]{0,30}){0,3}[ \t]+)?"
    r"[<(\[]?(?:mailto:)?(?P<address>[^\s<>()\[\]\"]{1,320})",
    re.MULTILINE,
)
# "Label: address" lines: "Unknown user: x", "Recipient: <x>", "Delivery failed: x".
_LABELLED = re.compile(
    r"^[ \t]*\[?(?P<label>[A-Za-z][A-Za-z0-9 '()_,-]{1,60}?)[ \t]*:[ \t]*[<\[(]?(?:mailto:)?"
    r"(?P<address>[^\s<>()\[\]\"]{1,320}?)[>\])]?[ \t.,;]*(?:$|\()",
    re.MULTILINE,
)
_HEADER_LABELS = frozenset(
    {"to", "from", "cc", "bcc", "sender", "reply-to", "return-path", "mail from", "envelope-from"}
)
# Unanchored patterns name the address with _ADDRESS itself: it can only start where a word
# starts, which keeps a scan of hostile text linear.
_ADDR = f"(?P<address>{_ADDRESS.pattern})"
_INLINE = (
    # "Your message to x couldn't be delivered", "error delivering your mail to <x>".
    re.compile(
        r"(?:deliver\w*|message|mail|sen[dt]\w*|relay\w*|post\w*)\b[^\n.:]{0,40}?[ \t]to:?[ \t]+"
        r"[\"']?<?(?:mailto:)?" + _ADDR,
        re.IGNORECASE,
    ),
    # "The following recipients returned permanent errors: x", "Address: <x>".
    re.compile(
        r"\b(?:recipients?|address(?:es)?|addressee)\b[^\n:<]{0,60}:[ \t]*<?(?:mailto:)?" + _ADDR,
        re.IGNORECASE,
    ),
    # "rejected recipient <x>".
    re.compile(r"\brecipient[ \t]+<" + _ADDR + ">", re.IGNORECASE),
    # SMTP replies naming the address: "550 5.1.1 <x>... User unknown".
    re.compile(
        r"(?<![\w.:/#+=-])[45][0-5]\d[ -](?:#?[45]\.\d{1,3}\.\d{1,3}[ \t]+)?[^\n]{0,80}?" + _ADDR
    ),
    # Sendmail: "kijitora@example.jp... User unknown".
    re.compile(_ADDR + r">?\.\.\.[ \t]"),
)
_MAIL_FROM = re.compile(r"MAIL[ \t]+FROM[ \t]*:[ \t]*<?([^\s<>]{1,320})", re.IGNORECASE)
# Lines naming an address to write to for help, not one that failed.
_HELP_LINE = re.compile(
    r"contact|send (?:e-?)?mail to|write to|questions|assistance|help ?desk|administrator",
    re.IGNORECASE,
)

_SOFT_WORDS = re.compile(
    _phrases(
        "delayed",
        "delay",
        "will be retried",
        "will retry",
        "will keep trying",
        "will continue trying",
        "still trying",
        "attempts will continue",
        "not yet been delivered",
        "temporary failure",
        "temporary error",
        "temporarily",
        "deferred",
        "warning message only",
        "retry time not reached",
    ),
    re.IGNORECASE,
)
_HARD_WORDS = re.compile(
    _phrases(
        "permanent",
        "fatal",
        "given up",
        "giving up",
        "gave up",
        "could not be delivered",
        "couldn't be delivered",
        "can't be delivered",
        "cannot be delivered",
        "undeliverable",
        "delivery failed",
        "delivery has failed",
        "failed permanently",
        "user unknown",
        "unknown user",
        "does not exist",
        "no such user",
        "unable to deliver",
        "was not delivered",
        "did not reach",
        "rejected",
        "failed",
    ),
    re.IGNORECASE,
)
# Wording that only delivery failure reports use.
_REPORT_WORDS = re.compile(
    _phrases(
        "qmail-send program",
        "mail delivery software",
        "mail delivery system",
        "delivery status notification",
        "the mail system",
        "transcript of session follows",
        "could not be delivered",
        "couldn't be delivered",
        "was not delivered",
        "did not reach",
        "unable to deliver",
        "error delivering",
        "could not deliver",
        "delivery to the following recipient",
        "following address",
        "following recipient",
        "permanent error",
        "error occurred while trying to deliver",
        "error has occurred while attempting to deliver",
        "送信できませんでした",
        "配信できませんでした",
        "届きませんでした",
    ),
    re.IGNORECASE,
)
# Weaker evidence, enough when the sender is a mailer daemon.
_FAILURE_WORDS = re.compile(
    r"fail|error|undeliver|unable|could ?n[o']t|can ?not|reject|unknown|not (?:be )?deliver"
    r"|bounce|returned|problem|delay|refused|invalid|disabled|exceed|no such|not exist"
    r"|full|quota|エラー|送信でき|配信でき|届きません|不達|не доставлен|unzustellbar",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|failure|failed|delivery status|non-?deliver|could ?n[o']t"
    r"|not (?:be )?delivered|mail system error|delayed|returned to sender|returning message"
    r"|unzustellbar|nicht zustellbar|不達|配信|エラー",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Candidate:
    text: str  # holds the address, possibly with punctuation around it
    trusted: bool  # stated as the failed recipient, so it counts even if it is the sender's
    position: int = -1  # where the report names it; -1 when it comes from a header


def _prose_failures(message: Message, report: str, original: _Original) -> list[FailedRecipient]:
    if not _looks_like_bounce(message, report):
        return []
    found = [*_textual_dsn_failures(report), *_found_failures(message, report, original)]
    if not found and (_HARD_WORDS.search(report) or _SOFT_WORDS.search(report)):
        # The report names nobody; the copy of our mail says whom it was for, and the report
        # says delivery failed.
        found = _failures(report, {address: -1 for address in original.recipients})
    return _unique(iter(found)) or _failures(report, {"": -1})


def _looks_like_bounce(message: Message, report: str) -> bool:
    """Whether a report without a delivery-status part is a delivery failure report at all.

    Vacation replies come back to the bounce address too, from a null return path like any
    bounce; only a mailer daemon's own name makes weak wording enough.
    """
    if _raw_header(message, "X-Failed-Recipients"):
        return True
    subject = _BOUNCE_SUBJECT.search(_header(message, "Subject")) is not None
    if _from_daemon(message):
        return subject or _FAILURE_WORDS.search(report) is not None
    if _raw_header(message, "Return-Path").strip() in {"<>", "<<>>"}:
        return subject or _REPORT_WORDS.search(report) is not None
    return subject and _REPORT_WORDS.search(report) is not None


def _from_daemon(message: Message) -> bool:
    senders = _header_addresses(message, "From", "Sender", "Return-Path")
    name = _header(message, "From").lower()
    return any(map(_is_daemon, senders)) or "mailer-daemon" in name or "mail delivery" in name


def _textual_dsn_failures(report: str) -> list[FailedRecipient]:
    """RFC 3464 fields written into the prose instead of a delivery-status part."""
    if "recipient:" not in report.lower():
        return []
    failures = []
    for block in _recipient_blocks(_field_blocks(report)):
        failure = _dsn_failure(block)
        if failure is not None and failure.address:
            reason = failure.diagnostic or _one_line(_reason(report, failure.address, -1))
            failures.append(replace(failure, diagnostic=reason))
    return failures


def _found_failures(message: Message, report: str, original: _Original) -> list[FailedRecipient]:
    excluded = _senders(message, report, original)
    found: dict[str, int] = {}
    for candidate in _candidates(message, report):
        address = _first_address(candidate.text)
        if address and address not in found and (candidate.trusted or address not in excluded):
            found[address] = candidate.position
            if len(found) >= MAX_RECIPIENTS:
                break
    return _failures(report, found)


def _candidates(message: Message, report: str) -> Iterator[_Candidate]:
    for address in _header_addresses(message, "X-Failed-Recipients"):
        yield _Candidate(address, trusted=True)
    for pattern in (_ANGLE_COLON, _RCPT_TO):
        for match in pattern.finditer(report):
            yield _Candidate(match.group("address"), True, match.start("address"))
    matches = [
        *_LISTED.finditer(report),
        *(m for m in _LABELLED.finditer(report) if _is_report_label(m.group("label"))),
        *(m for pattern in _INLINE for m in pattern.finditer(report)),
    ]
    for match in sorted(matches, key=lambda m: m.start("address")):
        if not _on_help_line(report, match.start("address")):
            yield _Candidate(match.group("address"), False, match.start("address"))


def _is_report_label(label: str) -> bool:
    """Labels of the report's own; "To:" or "X-Postfix-Sender:" name the other side."""
    name = label.strip().lower()
    return name not in _HEADER_LABELS and not name.endswith(("sender", "from"))


def _on_help_line(report: str, position: int) -> bool:
    start = report.rfind("\n", max(0, position - 200), position) + 1
    return _HELP_LINE.search(report, max(start, position - 200), position) is not None


def _senders(message: Message, report: str, original: _Original) -> frozenset[str]:
    """Addresses a report names that belong to the sender's side, never a failed recipient."""
    own = _header_addresses(message, "To", "From", "Return-Path", "Reply-To", "Sender")
    quoted = [_first_address(value) for value in _MAIL_FROM.findall(report)]
    ids = [*_MESSAGE_ID.findall(_raw_header(message, "Message-ID")), original.message_id]
    return frozenset([*own, *quoted, *(i.lower() for i in ids), *original.senders]) - {""}


def _failures(report: str, found: dict[str, int]) -> list[FailedRecipient]:
    """One failure per address found, each judged on the report lines about it."""
    default = _prose_severity(report)
    fallback = _diagnostic_line(report)
    single = len(found) == 1
    failures = []
    for address, position in found.items():
        reason = _reason(report, address, position) if address else ""
        # With one recipient, whatever code the report gives is about that recipient.
        status = _status(reason) or (_status(fallback) if single else "")
        severity = _code_severity(reason) or default
        diagnostic = _one_line(reason) or fallback
        failures.append(FailedRecipient(address, severity, status, diagnostic))
    return failures


def _prose_severity(report: str) -> Severity:
    soft = _SOFT_WORDS.search(report)
    hard = _HARD_WORDS.search(report)
    if soft and (hard is None or soft.start() < hard.start()):
        return Severity.SOFT
    return Severity.HARD


_ADDRESS_LINE = re.compile(
    r"[ \t]*(?:[*\u2022-]{1,2}[ \t]+)?[<\"(\[]?(?:mailto:)?" + _ADDRESS.pattern
)


def _reason(report: str, address: str, position: int) -> str:
    """What the report says about ``address``: its line and the lines that explain it.

    That is the paragraph from the line naming it, or the next one when the address stands
    alone on its line (qmail, Exchange), up to the line that names the next recipient.
    """
    if position < 0:
        position = report.lower().find(address)
        if position < 0:
            return ""
    start = report.rfind("\n", 0, position) + 1
    lines = report[start:].split("\n", 20)[:20]
    end = _paragraph_end(lines, 1, address)
    if end == 1 and len(lines) > 2 and not lines[1].strip():
        end = _paragraph_end(lines, 2, address)
    first = lines[0].strip().strip("<>:*-\u2022 ").lower()
    return "\n".join(lines[1 if first == address else 0 : end])


def _paragraph_end(lines: list[str], start: int, address: str) -> int:
    end = start
    while end < len(lines) and lines[end].strip():
        match = _ADDRESS_LINE.match(lines[end])
        if match is not None and address not in match.group().lower():
            break
        end += 1
    return end


def _diagnostic_line(report: str) -> str:
    """The first SMTP reply in the report, or failing that its first sentence about failure."""
    match = _REPLY_CODE.search(report) or _ENHANCED.search(report)
    if match is None:
        match = _HARD_WORDS.search(report) or _SOFT_WORDS.search(report)
    if match is None:
        return ""
    start = report.rfind("\n", 0, match.start()) + 1
    end = report.find("\n", match.end())
    return _one_line(report[start : end if end >= 0 else len(report)])


def _with_prose_addresses(
    failures: list[FailedRecipient], message: Message, report: str, original: _Original
) -> list[FailedRecipient]:
    """A DSN whose recipient fields are unreadable takes the addresses its prose part names."""
    found = [failure for failure in _found_failures(message, report, original) if failure.address]
    if len(failures) != 1 or not found:
        return failures
    template = failures[0]
    return [
        FailedRecipient(
            failure.address,
            template.severity,
            template.status,
            template.diagnostic or failure.diagnostic,
        )
        for failure in found
    ]


# --------------------------------------------------------------------------- Amazon SES

_SES_MARKER = re.compile(r'"notificationType\\?"\s*:')
# SNS e-mail notifications break long lines with "!", a newline and a space.
_SNS_WRAP = re.compile(r"!\n ")


def _ses_notification(report: str) -> BounceReport | None:
    """Amazon SES bounce notifications, delivered by SNS as JSON in a plain text mail."""
    if _SES_MARKER.search(report, 0, 4096) is None:
        return None
    document = _json_object(report) or _json_object(_SNS_WRAP.sub("", report))
    if isinstance(document.get("Message"), str):
        document = _json_object(document["Message"])
    bounce = _dict(document.get("bounce"))
    if document.get("notificationType") != "Bounce":
        return None
    severity = Severity.SOFT if bounce.get("bounceType") == "Transient" else Severity.HARD
    recipients = [
        _ses_recipient(_dict(item), severity)
        for item in _list(bounce.get("bouncedRecipients"))[:MAX_RECIPIENTS]
    ]
    if not recipients:
        return None
    mail = _dict(document.get("mail"))
    headers = _dict(mail.get("commonHeaders"))
    return BounceReport(
        recipients=tuple(recipients),
        original_message_id=_message_id(str(headers.get("messageId", ""))),
        original_recipients=tuple(str(a).lower() for a in _list(mail.get("destination"))),
        reporting_mta=_without_type(str(bounce.get("reportingMTA", ""))),
        structured=False,
    )


def _ses_recipient(item: dict[str, Any], severity: Severity) -> FailedRecipient:
    diagnostic = _without_type(str(item.get("diagnosticCode", "")))
    status = _status(str(item.get("status", ""))) or _status(diagnostic)
    if status.startswith("4"):
        severity = Severity.SOFT
    address = _first_address(str(item.get("emailAddress", "")))
    return FailedRecipient(address, severity, status, _one_line(diagnostic))


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json_object(text: str) -> dict[str, Any]:
    start = text.find("{")
    if start < 0:
        return {}
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


# --------------------------------------------------------------------------- the result

_PROSE_MTA = re.compile(
    r"^[ \t]*(?:this is the|message from)\b[^\n]{0,80}?\b(?:at|from)[ \t]+(?:host[ \t]+)?"
    r"([A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+)",
    re.IGNORECASE | re.MULTILINE,
)


def _reporting_mta(parts: _Parts, report: str, message: Message) -> str:
    for part in parts.statuses:
        for block in _field_blocks(_payload_text(part)):
            if "reporting-mta" in block:
                return _one_line(_without_type(block["reporting-mta"]))[:255]
    match = _PROSE_MTA.search(report)
    if match is not None:
        return match.group(1).rstrip(".").lower()
    for address in _header_addresses(message, "From"):
        if _is_daemon(address):
            return address.partition("@")[2]
    return ""


def _report(
    failures: list[FailedRecipient], original: _Original, mta: str, *, structured: bool
) -> BounceReport:
    return BounceReport(
        recipients=tuple(failures),
        original_message_id=original.message_id,
        original_recipients=original.recipients,
        reporting_mta=mta,
        structured=structured,
    )


def _unique(failures: Iterator[FailedRecipient | None]) -> list[FailedRecipient]:
    """At most MAX_RECIPIENTS failures, the first one reported for each address.

    A failure without an address is kept only when no other one names somebody.
    """
    kept: dict[str, FailedRecipient] = {}
    for failure in failures:
        if failure is not None and failure.address not in kept:
            kept[failure.address] = failure
            if len(kept) > MAX_RECIPIENTS:
                break
    if len(kept) > 1:
        kept.pop("", None)
    return list(kept.values())[:MAX_RECIPIENTS]


_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _one_line(text: str) -> str:
    if "\x1b" in text:
        text = _iso2022(text)
    line = _SPACE.sub(" ", _CONTROL.sub("", text)).strip()
    if len(line) <= MAX_DIAGNOSTIC:
        return line
    return line[: MAX_DIAGNOSTIC - 1].rstrip() + "…"


def _iso2022(text: str) -> str:
    """Japanese servers write raw ISO-2022-JP into fields that declare no charset."""
    try:
        return text.encode("ascii").decode("iso2022_jp")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text
