"""The customer's message inside a mail an operator forwarded to the support address.

Customers often write to a person instead of to support; the operator forwards that mail so
that it becomes a ticket for the customer, not for the operator. This module finds the
original: its sender, subject, text and date, and the operator's own note above it.

A forward comes in two forms. As an attached ``message/rfc822`` part it is the original
itself, parsed like any inbound mail, Message-ID included. Inline, the client writes a marker
and a few header lines above the quoted body; ``quotequail`` (close.io's maintained quote and
forward detector) reads Gmail's "---------- Forwarded message ---------", Outlook's
"-----Original Message-----" and "________________________________" blocks, Thunderbird's
"-------- Forwarded Message --------", Apple Mail's "Begin forwarded message:" and mail.ru's
"-------- Пересылаемое сообщение --------" with "От кого:/Кому:/Дата:/Тема:", in several
languages. Added here: German "Weitergeleitete Nachricht" markers (it finds the "Von:" block
but leaves the marker in the note), Yandex's forward, which names the sender in one line
('02.04.2012, 17:49, "Name" <a@b>:') instead of header lines, and the dates clients write.

Inline header dates have no fixed form and mostly no zone: clients render them in the
forwarder's local time. Such a date takes the UTC offset of the forwarding mail's own Date
header, which the same client wrote in the same local time; a date that cannot be read, or
has no zone and no forwarding Date to borrow one from, is None rather than a guess.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import quotequail  # type: ignore[import-untyped]

from mailsupport.core.limits import address_problem
from mailsupport.core.message import Address, ParsedMessage
from mailsupport.core.parse import parse_message
from mailsupport.core.subject import strip_prefixes
from mailsupport.errors import MessageParseError

_EMBEDDED_TYPES = frozenset({"message/rfc822", "message/global"})

# Marker lines quotequail leaves at the end of the operator's note or the forwarded text.
_MARKER = re.compile(
    r"^\s*(?:-{2,}\s*(?:Weitergeleitete Nachricht|Forwarded message|Конец пересылаемого"
    r" сообщения|Пересылаемое сообщение)\s*-{2,}|-{5,}\s*[^-]{0,60}\s*-{5,})\s*$",
    re.IGNORECASE,
)
# Yandex: '02.04.2012, 17:49, "Jane Customer" <jane@example.com>:' as the forward's first line.
_YANDEX_SENDER = re.compile(
    r"^\s*(?P<date>\d{1,2}\.\d{1,2}\.\d{4},\s*\d{1,2}:\d{2}),\s*(?P<from>.+?):\s*$"
)
_MAILTO = re.compile(r"[\[<]\s*mailto:\s*([^\]>\s]+)\s*[\]>]", re.IGNORECASE)
_BARE_ADDRESS = re.compile(r"[^\s<>\[\]\"'(),;:]+@[^\s<>\[\]\"'(),;:]+\.[^\s<>\[\]\"'(),;:]+")
_SPACES = re.compile(r"[\s\u00a0\u202f\u200e\u200f]+")
_ZONE = re.compile(r"\s*(?:(?:GMT|UTC)\s*)?([+-])(\d{1,2}):?(\d{2})?\s*$", re.IGNORECASE)

# Forms of the inline Date line, zone removed first, with English month and day names.
_DATE_FORMATS = (
    "%a, %b %d, %Y at %I:%M %p",  # Gmail: Mon, Apr 2, 2012 at 5:49 PM
    "%a, %b %d, %Y, %I:%M %p",
    "%A, %B %d, %Y %I:%M %p",  # Outlook: Monday, April 2, 2012 5:49 PM
    "%A, %B %d, %Y %I:%M:%S %p",
    "%A, %d %B %Y %H:%M",  # Outlook, day first: Friday, 23 March 2012 17:08
    "%d %B %Y at %H:%M:%S",  # Apple Mail: 2 April 2012 at 17:49:00
    "%d %B %Y at %H:%M",
    "%B %d, %Y at %I:%M:%S %p",  # Apple Mail (US): April 2, 2012 at 5:49:00 PM
    "%B %d, %Y at %I:%M %p",
    "%d.%m.%Y, %H:%M",  # Yandex: 02.04.2012, 17:49
    "%d.%m.%Y %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
)
# Day, month name, year and time, as Russian, German and English clients spell them.
_SPELLED_DATE = re.compile(
    r"(?P<day>\d{1,2})\.?\s+(?P<month>[^\W\d_]{3,10}\.?)\s+(?P<year>\d{4})"
    r"(?:\s*г\.?)?,?\s*(?:в|um|at)?\s*(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::\d{2})?"
    r"(?:\s*Uhr)?\s*$",
    re.IGNORECASE,
)
# Stems long enough to tell months apart in English, German and Russian (genitive included:
# "апреля", "мар."), in the order they are tried.
_MONTH_STEMS = (
    ("jan", 1),
    ("jän", 1),
    ("янв", 1),
    ("feb", 2),
    ("фев", 2),
    ("mar", 3),
    ("mär", 3),
    ("мар", 3),
    ("apr", 4),
    ("апр", 4),
    ("may", 5),
    ("mai", 5),
    ("мая", 5),
    ("май", 5),
    ("jun", 6),
    ("июн", 6),
    ("jul", 7),
    ("июл", 7),
    ("aug", 8),
    ("авг", 8),
    ("sep", 9),
    ("сен", 9),
    ("oct", 10),
    ("okt", 10),
    ("окт", 10),
    ("nov", 11),
    ("ноя", 11),
    ("dec", 12),
    ("dez", 12),
    ("дек", 12),
)
_ZONE_NAMES = {"UTC": 0, "GMT": 0, "CET": 60, "CEST": 120, "MSK": 180}


@dataclass(frozen=True)
class Forwarded:
    """The original message inside a forward, and the forwarder's note above it.

    ``message_id`` is known only for attached originals; ``note`` is the forwarder's text
    above the forwarded message ("" when none).
    """

    sender: Address
    subject: str
    text: str
    message_id: str
    date: datetime | None
    note: str = ""


def find_forwarded(parsed: ParsedMessage, raw: bytes) -> Forwarded | None:
    """The message ``parsed`` forwards, attached or inline; None when it is not a forward.

    Also None when the forwarded header lines give no address (Exchange shows only a name
    for senders in its own directory), or one that cannot be a mailbox: a ticket needs a
    customer it can answer. ``raw`` is not read: ``parsed`` already carries an attached
    original as bytes; the parameter keeps the call the same as the pipeline's other steps
    that are handed the raw message.
    """
    del raw
    return _attached(parsed) or _inline(parsed)


def _attached(parsed: ParsedMessage) -> Forwarded | None:
    for attachment in parsed.attachments:
        if attachment.content_type not in _EMBEDDED_TYPES or not attachment.content.strip():
            continue
        try:
            inner = parse_message(attachment.content)
        except MessageParseError:
            continue
        if inner.from_ is None or address_problem(inner.from_.email):
            continue
        return Forwarded(
            sender=inner.from_,
            subject=inner.subject,
            text=inner.text.strip(),
            message_id=inner.message_id,
            date=inner.date,
            note=parsed.text.strip(),
        )
    return None


def _inline(parsed: ParsedMessage) -> Forwarded | None:
    found = quotequail.unwrap(parsed.text.replace("\r\n", "\n"))
    if not found or found.get("type") != "forward":
        return None
    text = _without_markers(str(found.get("text", "")))
    sender_line, date_line = str(found.get("from", "")), str(found.get("date", ""))
    if not sender_line:
        sender_line, date_line, text = _yandex_sender(text, date_line)
    sender = parse_sender(sender_line)
    if not sender.email or address_problem(sender.email):
        return None
    return Forwarded(
        sender=sender,
        # Yandex names no subject; the forward's own one is the original's behind "Fwd:".
        subject=" ".join(str(found.get("subject", "")).split()) or strip_prefixes(parsed.subject),
        text=text,
        message_id="",
        date=parse_forwarded_date(date_line, parsed.header("Date")),
        note=_without_markers(str(found.get("text_top", ""))),
    )


def _yandex_sender(text: str, date_line: str) -> tuple[str, str, str]:
    """Sender, date and the remaining text when the forward opens with Yandex's sender line."""
    first, _, rest = text.partition("\n")
    match = _YANDEX_SENDER.match(first)
    if match is None:
        return "", date_line, text
    return match.group("from"), match.group("date"), rest.strip()


def _without_markers(text: str) -> str:
    lines = text.strip().split("\n")
    while lines and (_MARKER.match(lines[-1]) or not lines[-1].strip()):
        lines.pop()
    while lines and (_MARKER.match(lines[0]) or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def parse_sender(value: str) -> Address:
    """An address from a forwarded From line: "Name <a@b>", "Name [mailto:a@b]", or "a@b"."""
    cleaned = _MAILTO.sub(r"<\1>", " ".join(value.split()))
    name, address = email.utils.parseaddr(cleaned)
    if "@" not in address:
        bare = _BARE_ADDRESS.search(cleaned)
        address = bare.group() if bare else ""
        name = name or cleaned.replace(address, "").strip(" <>\"'")
    address = address.strip().lower()
    name = name.strip().strip("\"'").strip()
    return Address(address, "" if name.lower() == address else name)


def parse_forwarded_date(value: str, forwarding_date: str | None = None) -> datetime | None:
    """The UTC time a forwarded Date line names, or None when unreadable or zone-less.

    A line without a zone takes the offset of ``forwarding_date``, the forwarding mail's own
    Date header, as the same client wrote both in its local time.
    """
    text = _SPACES.sub(" ", value).strip()
    if not text:
        return None
    rfc = _rfc5322(text)
    if rfc is not None:
        return rfc
    local, zone = _split_zone(text)
    moment = _local_time(local)
    if moment is None:
        return None
    zone = zone or _zone_of(forwarding_date)
    if zone is None:
        return None
    return moment.replace(tzinfo=zone).astimezone(UTC)


def _rfc5322(text: str) -> datetime | None:
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        # parsedate_to_datetime leaves "-0000" and zone-less dates naive: the zone is unknown.
        return None
    return moment.astimezone(UTC)


def _split_zone(text: str) -> tuple[str, tzinfo | None]:
    """The date without its trailing zone, and that zone when one is written."""
    match = _ZONE.search(text)
    if match is not None:
        sign = -1 if match.group(1) == "-" else 1
        minutes = int(match.group(2)) * 60 + int(match.group(3) or 0)
        return text[: match.start()].strip(), timezone(timedelta(minutes=sign * minutes))
    head, _, last = text.rpartition(" ")
    if last.upper() in _ZONE_NAMES:
        return head, timezone(timedelta(minutes=_ZONE_NAMES[last.upper()]))
    return text, None


def _local_time(text: str) -> datetime | None:
    spelled = _day_month_year(text)
    if spelled is not None:
        return spelled
    for form in _DATE_FORMATS:
        try:
            # Naive on purpose: the caller adds the zone it found or borrowed.
            return datetime.strptime(text, form)
        except ValueError:
            continue
    return None


def _day_month_year(text: str) -> datetime | None:
    """ "2 апреля 2012, 17:49", "2. Apr. 2012 um 17:49 Uhr", "3 мар. 2021 г. в 10:00" ..."""
    match = _SPELLED_DATE.search(text)
    if match is None:
        return None
    month = _month(match.group("month"))
    if month is None:
        return None
    try:
        # Naive on purpose: the caller adds the zone it found or borrowed.
        return datetime(
            int(match.group("year")),
            month,
            int(match.group("day")),
            int(match.group("hour")),
            int(match.group("minute")),
        )
    except ValueError:
        return None


def _month(name: str) -> int | None:
    folded = name.lower().rstrip(".")
    return next(
        (number for stem, number in _MONTH_STEMS if folded.startswith(stem)),
        None,
    )


def _zone_of(date_header: str | None) -> tzinfo | None:
    if not date_header:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment.tzinfo
