"""Composing one outgoing message: an ``OutgoingMail`` value in, RFC 5322 bytes out.

Much of what goes into the headers comes from customers (a ticket subject, a display name, the
Message-IDs of the mail we answer), so every header value is first reduced to one line of text:
line breaks and control characters become spaces. Addresses are never repaired: one that is not
a plain ``local@domain`` is refused with ``InvalidAddressError`` and the caller skips it.

Python 3.11's header folder (``email.policy`` with ``headerregistry``) has two bugs that matter
here: it loses a space that falls between two encoded words, and it drops the quotes around a
display name it has to fold, so ``"Smith, [ACME]"`` reaches the reader as two broken mailboxes.
Subject, display names and other free text are therefore RFC 2047-encoded by
``email.header.Header``, which splits on character boundaries and keeps the spaces inside the
encoded words, and this module folds the result between whole words. The MIME structure,
transfer encodings and RFC 2231 attachment names stay with the modern ``email`` API.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import quoprimime
from email.header import Header
from email.message import EmailMessage, MIMEPart
from email.policy import EmailPolicy
from email.utils import format_datetime, quote
from typing import TYPE_CHECKING, Any

from mailsupport.core.message import Address, Attachment
from mailsupport.errors import MailsupportError

AUTO_SUBMITTED = ("auto-replied", "auto-generated")

# Headers a caller may add. Anything else is refused so that no caller can smuggle in a header
# that changes delivery or how clients treat the mail (Bcc, List-*, Content-*, Sender...).
EXTRA_HEADERS = {
    name.lower(): name for name in ("X-Mailsupport-Ticket", "X-Mailsupport-Kind", "X-Loop")
}

# RFC 3834 section 5: Auto-Submitted is the standard way to say "do not answer this". Exchange
# and Outlook ignore it and honour X-Auto-Response-Suppress instead; OOF and AutoReply silence
# their out-of-office and rule replies while still letting delivery reports (DR, NDR) reach us,
# which "All" would not, and bounces are linked back to the outbox. Precedence: bulk is left
# out: RFC 3834 discourages it, sendmail returns no bounce for mail of negative precedence
# (bulk is -60), and some filters take it for marketing. A responder that knows only Precedence is
# contained by the screening of its reply and the per-address rate cap.
_SUPPRESS_AUTO_RESPONSES = "OOF, AutoReply"

_CRLF = "\r\n"
_LINE_END = re.compile(r"\r\n|\r|\n")  # what the generator turns into CRLF
_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD stay within 78 characters (and MUST within 998)
_ENCODED_WORD = 75  # RFC 2047 section 2: the longest an encoded word may be
_MAX_NAME = 256  # longer display names are junk that would only bloat every header naming them
_MAX_REFERENCES = 20  # the thread root and the latest ids are all threading needs
# Foreign ids are echoed as they came, so bound them by what still fits one header line.
_MESSAGE_ID = re.compile(r"[!-;=?-~]{1,900}")  # visible ASCII except "<" and ">"

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")
_SPACES = re.compile(r" {2,}")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MIME_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_MIME_TYPE = re.compile(rf"({_MIME_NAME})/({_MIME_NAME})")


class HeaderInjectionError(MailsupportError):
    """The mail cannot be built as asked: a programming error, never caused by user data."""


class InvalidAddressError(MailsupportError, ValueError):
    """An address we cannot send to; the caller leaves that recipient out."""


@dataclass(frozen=True)
class OutgoingMail:
    """Everything one outgoing message says; ``build_message`` turns it into bytes.

    Message ids are given without angle brackets. ``references`` runs oldest first;
    ``in_reply_to`` is added at its end when missing, as RFC 5322 3.6.4 asks. ``date`` must be
    timezone-aware and ``message_id`` set (from ``new_message_id``): both are fixed when the mail
    is queued so that a retry sends exactly the same message.
    """

    from_name: str
    from_address: str
    to: tuple[Address, ...]
    cc: tuple[Address, ...] = ()
    subject: str = ""
    text: str = ""
    html: str | None = None
    message_id: str = ""
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    reply_to: Address | None = None
    auto_submitted: str | None = "auto-replied"
    date: datetime | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()


class _Folded(str):
    """A header value encoded and folded by this module: 7-bit, lines joined by "\\n "."""


if TYPE_CHECKING:
    _EmailPolicy = EmailPolicy[EmailMessage]
else:  # the class is generic only in the type stubs
    _EmailPolicy = EmailPolicy


class _Policy(_EmailPolicy):
    """The SMTP policy, except that values folded here are stored and written as they are."""

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if isinstance(value, _Folded):
            return name, value
        return super().header_store_parse(name, value)


# refold_source="none" keeps the stock folder away from _Folded values when writing them out.
_POLICY = _Policy(linesep="\r\n", max_line_length=_FOLD_AT, cte_type="7bit", refold_source="none")


def one_line(text: str) -> str:
    """Text made safe for a header: line breaks and controls become spaces, runs of spaces one."""
    return _SPACES.sub(" ", _UNSAFE.sub(" ", text)).strip(" ")


def validate_address(address: str) -> str:
    """The address as it goes on the wire, or ``InvalidAddressError``.

    Only a dot-atom local part is accepted (no quoting, spaces or non-ASCII: the relay is not
    asked for SMTPUTF8); an internationalised domain is converted to its ASCII form.
    """
    local, at, domain = address.rpartition("@")
    host = _hostname(domain)
    if not at or host is None or len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        raise InvalidAddressError(f"Not an address we can send to: {address[:200]!r}.")
    return f"{local}@{host}"


def _hostname(domain: str) -> str | None:
    """The ASCII form of a host name, or None when it is not one."""
    try:
        name = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name


def recipients(mail: OutgoingMail) -> tuple[str, ...]:
    """The envelope recipients of a mail (To, then Cc) as sent, each once."""
    return tuple(dict.fromkeys(validate_address(a.email) for a in (*mail.to, *mail.cc)))


def new_message_id(domain: str) -> str:
    """A fresh Message-ID for our domain, without angle brackets.

    160 random bits make an id nobody can guess, so naming one in In-Reply-To proves the sender
    saw our mail; lower-case base32 survives systems that fold the case of ids.
    """
    host = _hostname(domain)
    if host is None:
        raise InvalidAddressError(f"Not a domain for a Message-ID: {domain[:200]!r}.")
    token = base64.b32encode(secrets.token_bytes(20)).decode("ascii").lower()
    return f"{token}@{host}"


_OUR_ID_TOKEN = re.compile(r"[a-z2-7]{32}")


def is_our_message_id(message_id: str, domains: frozenset[str]) -> bool:
    """Whether a Message-ID has the form ``new_message_id`` gives, in one of our domains.

    The domain alone is not enough: colleagues' mail clients (Thunderbird, Exchange) also use
    the company domain in their ids, and their mail is not ours coming back.
    """
    token, at, domain = message_id.strip("<>").lower().rpartition("@")
    return bool(at) and domain in domains and _OUR_ID_TOKEN.fullmatch(token) is not None


def build_message(mail: OutgoingMail) -> bytes:
    """The complete message with CRLF line endings, ready for SMTP DATA."""
    headers = _headers(mail)
    if mail.html is None and not mail.attachments:
        return _lone_text_part(headers, _body_text(mail.text))
    message = MIMEPart(policy=_POLICY)
    for name, value in headers:
        message[name] = value
    message["MIME-Version"] = "1.0"
    _set_body(message, mail)
    return message.as_bytes()


def _lone_text_part(headers: list[tuple[str, _Folded]], text: str) -> bytes:
    """What the email package writes for a lone text part, written directly.

    Most of our mail is one text part, and handing it to the generator cost more than all the
    rest of composing it. The headers are already encoded and folded here, which the generator
    would copy out line by line; the body is 7-bit text or quoted-printable, whose line endings
    it would turn into CRLF.
    """
    cte = _transfer_encoding(text)
    body = text if cte == "7bit" else _quoted_printable(text)
    lines = [f"{name}: {_CRLF.join(value.splitlines())}" for name, value in headers]
    lines += ["MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"']
    lines += [f"Content-Transfer-Encoding: {cte}", "", _LINE_END.sub(_CRLF, body)]
    return _CRLF.join(lines).encode("ascii")


# --- headers ---------------------------------------------------------------------------------


def _headers(mail: OutgoingMail) -> list[tuple[str, _Folded]]:
    if not mail.to:
        raise HeaderInjectionError("An outgoing mail needs at least one To recipient.")
    if mail.date is None or mail.date.utcoffset() is None:
        raise HeaderInjectionError("An outgoing mail needs a timezone-aware date.")
    headers = [
        ("Date", _fold("Date", [format_datetime(mail.date)])),
        ("From", _fold("From", _mailbox("From", mail.from_name, mail.from_address))),
        ("To", _fold("To", _mailbox_list("To", mail.to))),
    ]
    if mail.cc:
        headers.append(("Cc", _fold("Cc", _mailbox_list("Cc", mail.cc))))
    if mail.reply_to is not None:
        headers.append(("Reply-To", _fold("Reply-To", _mailbox_list("Reply-To", (mail.reply_to,)))))
    headers.append(("Subject", _fold("Subject", _text_pieces("Subject", one_line(mail.subject)))))
    headers.extend(_thread_headers(mail))
    headers.extend(_auto_headers(mail.auto_submitted))
    headers.extend(_extra_headers(mail.extra_headers))
    return headers


def _thread_headers(mail: OutgoingMail) -> list[tuple[str, _Folded]]:
    own = _usable_id(mail.message_id)
    if own is None or "@" not in own:
        raise HeaderInjectionError("An outgoing mail needs a message_id from new_message_id().")
    headers = [("Message-ID", _fold("Message-ID", [f"<{own}>"]))]
    parent = _usable_id(mail.in_reply_to or "")
    if parent is not None:
        headers.append(("In-Reply-To", _fold("In-Reply-To", [f"<{parent}>"])))
    references = _references((*mail.references, mail.in_reply_to or ""))
    if references:
        headers.append(("References", _fold("References", [f"<{i}>" for i in references])))
    return headers


def _references(ids: Iterable[str]) -> list[str]:
    usable = list(dict.fromkeys(i for i in map(_usable_id, ids) if i is not None))
    if len(usable) > _MAX_REFERENCES:
        return [usable[0], *usable[-(_MAX_REFERENCES - 1) :]]
    return usable


def _usable_id(value: str) -> str | None:
    """A message id safe to echo, or None: foreign ids that are not are dropped, not repaired."""
    candidate = value.strip().removeprefix("<").removesuffix(">")
    return candidate if _MESSAGE_ID.fullmatch(candidate) else None


def _auto_headers(auto_submitted: str | None) -> list[tuple[str, _Folded]]:
    if auto_submitted is None:
        return []
    if auto_submitted not in AUTO_SUBMITTED:
        raise HeaderInjectionError(f"Auto-Submitted must be one of {AUTO_SUBMITTED}.")
    return [
        ("Auto-Submitted", _fold("Auto-Submitted", [auto_submitted])),
        ("X-Auto-Response-Suppress", _fold("X-Auto-Response-Suppress", [_SUPPRESS_AUTO_RESPONSES])),
    ]


def _extra_headers(extra: Iterable[tuple[str, str]]) -> list[tuple[str, _Folded]]:
    headers = []
    for name, value in extra:
        canonical = EXTRA_HEADERS.get(name.strip().lower())
        if canonical is None:
            raise HeaderInjectionError(f"Header not allowed in extra_headers: {name[:100]!r}.")
        headers.append((canonical, _fold(canonical, _text_pieces(canonical, one_line(value)))))
    return headers


def _mailbox_list(header: str, addresses: Sequence[Address]) -> list[str]:
    pieces: list[str] = []
    for address in addresses:
        if pieces:
            pieces[-1] += ","
        pieces.extend(_mailbox(header, address.name, address.email))
    return pieces


def _mailbox(header: str, name: str, address: str) -> list[str]:
    spec = validate_address(address)
    display = one_line(name)[:_MAX_NAME].rstrip(" ")
    if not display:
        return [spec]
    return [*_phrase(header, display), f"<{spec}>"]


def _phrase(header: str, name: str) -> list[str]:
    quoted = f'"{quote(name)}"'
    # Many clients decode "=?...?=" even inside quotes, so such a name is encoded to stay literal.
    if name.isascii() and "=?" not in name and _fits_first_line(header, quoted):
        return [quoted]
    return _encoded_words(header, name)


def _text_pieces(header: str, text: str) -> list[str]:
    """Unstructured text as words to fold between: plain when ASCII and foldable, else encoded."""
    words = text.split(" ")
    foldable = all(len(word) < _FOLD_AT for word in words) and _fits_first_line(header, words[0])
    if text.isascii() and "=?" not in text and foldable:
        return words
    return _encoded_words(header, text)


def _fits_first_line(header: str, piece: str) -> bool:
    return len(header) + 2 + len(piece) <= _FOLD_AT


def _encoded_words(header: str, text: str) -> list[str]:
    # Whitespace between two encoded words is not part of the text (RFC 2047 6.2), so they can
    # be folded anywhere between them. Header keeps each word within 75 characters, the first
    # one short enough to follow "Name: ".
    encoded = Header(text, "utf-8", header_name=header).encode(
        maxlinelen=_ENCODED_WORD + 1, linesep="\n"
    )
    return encoded.split()


def _fold(name: str, pieces: Iterable[str]) -> _Folded:
    """Pieces joined by spaces, with a fold before any piece that would pass 78 characters.

    The first piece always follows "Name: ": the callers make text short enough for that, and
    an address, which cannot be folded, is better there than after an empty first line.
    """
    lines = [""]
    room = _FOLD_AT - len(name) - 2  # "Name: " precedes the first line
    for piece in pieces:
        separator = " " if lines[-1] else ""
        if len(separator) + len(piece) > room and lines[-1]:
            lines.append("")
            room, separator = _FOLD_AT - 1, ""
        lines[-1] += separator + piece
        room -= len(separator) + len(piece)
    return _Folded("\n ".join(lines))


# --- body ------------------------------------------------------------------------------------


def _set_body(message: MIMEPart, mail: OutgoingMail) -> None:
    text = _body_text(mail.text)
    message.set_content(text, subtype="plain", charset="utf-8", cte=_transfer_encoding(text))
    if mail.html is not None:
        html = _body_text(mail.html)
        message.add_alternative(html, subtype="html", charset="utf-8", cte=_transfer_encoding(html))
    for attachment in mail.attachments:
        maintype, subtype = _attachment_type(attachment.content_type)
        message.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype,
            filename=one_line(attachment.filename) or "attachment",
        )


def _quoted_printable(text: str) -> str:
    latin1 = text.encode("utf-8").decode("latin-1")
    return quoprimime.body_encode(latin1, maxlinelen=_FOLD_AT)


def _body_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\ud800-\udfff]", "\ufffd", text)  # lone surrogates cannot be encoded
    return text if text.endswith("\n") else text + "\n"


def _transfer_encoding(text: str) -> str:
    # 7bit when the text already is; otherwise quoted-printable, which any relay carries and
    # which keeps the ASCII parts (ticket numbers, links) readable in a queue dump.
    if text.isascii() and all(len(line) <= _FOLD_AT for line in text.split("\n")):
        return "7bit"
    return "quoted-printable"


def _attachment_type(content_type: str) -> tuple[str, str]:
    match = _MIME_TYPE.fullmatch(content_type.split(";", 1)[0].strip().lower())
    # A message/* or multipart/* part must itself be MIME in 7bit or 8bit; bytes of unknown
    # shape travel safely only as an opaque file.
    if match is None or match.group(1) in ("message", "multipart"):
        return "application", "octet-stream"
    return match.group(1), match.group(2)
