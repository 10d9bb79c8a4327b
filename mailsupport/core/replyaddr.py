"""Signed reply addresses: the Reply-To an operator's notification carries.

An operator answers a ticket from their own mail client, so the reply must prove two things
the From header cannot (invariant 6): which ticket it is about, and that it comes from the
operator the notification went to. Each notification therefore sets Reply-To to
``support+<ticket>-<day>-<token>@example.com``, where the token is an HMAC of the ticket
number, the operator's id and the day the address was issued, under a server secret. The
operator's id is not in the address: the pipeline looks up the operator by the From address
and checks the token against that operator, so an address copied to someone else proves
nothing for anyone else.

The day (UTC days since 1970, in base32) is signed with the rest, so an address's age is
known without storing it: a leaked address stops acting once it is older than its lifetime.
Addresses from before they carried a day (``support+<ticket>-<token>@``) are still read; the
caller decides which day they count as issued on.

Parsing is split from checking on purpose: the address alone names the ticket (useful for
threading even when the token is refused), while only ``token_matches`` grants an operator's
authority, and only while the address has not expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from mailsupport.core.subaddress import extension, split_address

# 128 bits of the HMAC: unguessable, yet short enough for mail clients that show the address.
TOKEN_BYTES = 16
# base32 of 16 bytes without padding.
TOKEN_LENGTH = 26
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower case
_EPOCH = date(1970, 1, 1)

# "<local>+<ticket>-[<day>-]<token>" once the base local part has been matched; ticket numbers
# and days are written without leading zeros (for a day: "a") so that each has one spelling,
# and the token has an exact length so that other "+tag" addresses ("+bounce-...") never match.
_SUFFIX = re.compile(
    r"\+(0|[1-9][0-9]{0,18})-(?:(a|[b-z2-7][a-z2-7]{0,6})-)?([a-z2-7]{" + str(TOKEN_LENGTH) + "})"
)


@dataclass(frozen=True)
class ReplyTarget:
    """What a reply address names: a ticket, and a token still to be checked."""

    ticket_number: int
    token: str
    issued_day: int | None = None  # None: an address from before addresses carried a day


def day_number(when: datetime) -> int:
    """Days since 1970-01-01 of ``when``'s UTC date."""
    return (when.astimezone(UTC).date() - _EPOCH).days


def _encode_day(day: int) -> str:
    digits = ""
    while True:
        day, digit = divmod(day, 32)
        digits = _ALPHABET[digit] + digits
        if not day:
            return digits


def _decode_day(text: str) -> int:
    day = 0
    for char in text:
        day = day * 32 + _ALPHABET.index(char)
    return day


def token(ticket_number: int, operator_id: int, secret: bytes, day: int | None) -> str:
    """Lower-case, unpadded base32 of the first 128 bits of the HMAC-SHA256.

    ``day`` None is the undated form addresses had before; it is only ever checked, not issued.
    """
    message = b"reply:%d:%d" % (ticket_number, operator_id)
    if day is not None:
        message += b":%d" % day
    digest = hmac.new(secret, message, hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def reply_address(base: str, ticket_number: int, operator_id: int, secret: bytes, day: int) -> str:
    """The Reply-To for a notification about ``ticket_number`` sent to ``operator_id`` on
    ``day`` (see ``day_number``)."""
    if ticket_number < 0:
        raise ValueError(f"a ticket number is never negative: {ticket_number}")
    if operator_id < 0:
        raise ValueError(f"an operator id is never negative: {operator_id}")
    if day < 0:
        raise ValueError(f"a day is never before 1970: {day}")
    local, domain = split_address(base)
    if not local or not domain:
        raise ValueError(f"not an e-mail address: {base!r}")
    signed = token(ticket_number, operator_id, secret, day)
    return f"{local}+{ticket_number}-{_encode_day(day)}-{signed}@{domain}"


def parse_reply_address(address: str, base: str) -> ReplyTarget | None:
    """The ticket, day and token ``address`` carries, or None when it is not a reply address.

    Syntax only: the token is not checked here. Local part and domain are compared without
    regard to case, as mail servers may fold either.
    """
    rest = extension(address, base)
    match = _SUFFIX.fullmatch(rest) if rest is not None else None
    if match is None:
        return None
    day = _decode_day(match.group(2)) if match.group(2) is not None else None
    return ReplyTarget(int(match.group(1)), match.group(3), day)


def token_matches(target: ReplyTarget, operator_id: int, secret: bytes) -> bool:
    """Whether the token was signed for this ticket, operator and day under ``secret``."""
    expected = token(target.ticket_number, operator_id, secret, target.issued_day)
    # Compared in lower case: what was signed is lower case, and a server may fold it.
    return hmac.compare_digest(target.token.lower().encode(), expected.encode())


def is_expired(
    target: ReplyTarget, today: int, lifetime_days: int, undated_day: int | None
) -> bool:
    """Whether the address is older than ``lifetime_days`` on ``today``.

    An undated address counts as issued on ``undated_day``; with none, it has expired.
    """
    issued = target.issued_day if target.issued_day is not None else undated_day
    return issued is None or today - issued > lifetime_days
