"""Signed reply addresses: the Reply-To an operator's notification carries.

An operator answers a ticket from their own mail client, so the reply must prove two things
the From header cannot (invariant 6): which ticket it is about, and that it comes from the
operator the notification went to. Each notification therefore sets Reply-To to
``support+<ticket>-<token>@example.com``, where the token is an HMAC of the ticket number and
the operator's id under a server secret. The operator's id is not in the address: the
pipeline looks up the operator by the From address and checks the token against that
operator, so an address copied to someone else proves nothing for anyone else.

Parsing is split from checking on purpose: the address alone names the ticket (useful for
threading even when the token is refused), while only ``token_matches`` grants an operator's
authority.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from mailsupport.core.subaddress import extension, split_address

# 128 bits of the HMAC: unguessable, yet short enough for mail clients that show the address.
TOKEN_BYTES = 16
# base32 of 16 bytes without padding.
TOKEN_LENGTH = 26

# "<local>+<ticket>-<token>" once the base local part has been matched; ticket numbers are
# plain decimals without leading zeros so that each ticket has exactly one address, and the
# token has an exact length so that other "+tag" addresses ("+bounce-...") never match.
_SUFFIX = re.compile(r"\+(0|[1-9][0-9]{0,18})-([a-z2-7]{" + str(TOKEN_LENGTH) + "})")


@dataclass(frozen=True)
class ReplyTarget:
    """What a reply address names: a ticket, and a token still to be checked."""

    ticket_number: int
    token: str


def token(ticket_number: int, operator_id: int, secret: bytes) -> str:
    """Lower-case, unpadded base32 of the first 128 bits of the HMAC-SHA256."""
    message = b"reply:%d:%d" % (ticket_number, operator_id)
    digest = hmac.new(secret, message, hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def reply_address(base: str, ticket_number: int, operator_id: int, secret: bytes) -> str:
    """The Reply-To for a notification about ``ticket_number`` sent to ``operator_id``."""
    if ticket_number < 0:
        raise ValueError(f"a ticket number is never negative: {ticket_number}")
    if operator_id < 0:
        raise ValueError(f"an operator id is never negative: {operator_id}")
    local, domain = split_address(base)
    if not local or not domain:
        raise ValueError(f"not an e-mail address: {base!r}")
    signed = token(ticket_number, operator_id, secret)
    return f"{local}+{ticket_number}-{signed}@{domain}"


def parse_reply_address(address: str, base: str) -> ReplyTarget | None:
    """The ticket and token ``address`` carries, or None when it is not a reply address.

    Syntax only: the token is not checked here. Local part and domain are compared without
    regard to case, as mail servers may fold either.
    """
    rest = extension(address, base)
    match = _SUFFIX.fullmatch(rest) if rest is not None else None
    if match is None:
        return None
    return ReplyTarget(int(match.group(1)), match.group(2))


def token_matches(target: ReplyTarget, operator_id: int, secret: bytes) -> bool:
    """Whether the token was signed for this ticket and this operator under ``secret``."""
    expected = token(target.ticket_number, operator_id, secret)
    # Compared in lower case: what was signed is lower case, and a server may fold it.
    return hmac.compare_digest(target.token.lower().encode(), expected.encode())
