"""Identify step: turn the sender and the people copied into contacts.

Contacts are created from the addresses and display names the mail carries. Nothing here
grants privileges: an address in a From header proves nothing, and neither does any other
sender. Mail without a usable From (none, one that names no mailbox, or one no mailbox can
have) is answered at the envelope sender the channel recorded (or the Return-Path header),
then at Reply-To, then at Sender; a null sender or MAILER-DAEMON is no one to answer. Mail
with none of these stops here: a ticket needs someone it can answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.limits import address_problem
from mailsupport.core.message import Address, ParsedMessage
from mailsupport.db.models import Contact
from mailsupport.domain.contacts import get_or_create_contact, load_contacts
from mailsupport.domain.operators import operator_emails
from mailsupport.errors import MessageParseError
from mailsupport.pipeline.context import Incoming

log = logging.getLogger(__name__)

# Mail copied to hundreds of people is a newsletter or spam, not a conversation to join.
MAX_COPIED = 50

FROM = "From"
ENVELOPE = "envelope sender"
REPLY_TO = "Reply-To"
SENDER = "Sender"
_NOBODY = frozenset({"mailer-daemon"})  # local parts of the null sender's stand-ins


@dataclass(frozen=True)
class People:
    sender: Contact | None  # None when the mail names nobody we could answer
    copied: tuple[Contact, ...]  # other recipients who may take part: To and Cc, not us
    # Every address an operator writes from (active or not): only mail from one of these
    # needs the operator step's lookups.
    operator_addresses: frozenset[str] = frozenset()
    sender_source: str = FROM  # which of FROM, ENVELOPE, REPLY_TO, SENDER named the sender


@dataclass(frozen=True)
class Sender:
    """Who a mail is from, and where that was found."""

    address: Address
    source: str


def sender_address(
    parsed: ParsedMessage, envelope_from: str | None = None, config: Config | None = None
) -> Sender | None:
    """The From mailbox when it can be anyone's; else the first of the envelope sender (the
    channel's, or the Return-Path header), Reply-To and Sender that is a mailbox, not the null
    sender's stand-in and not one of ours."""
    if parsed.from_ is not None and address_problem(parsed.from_.email) is None:
        return Sender(parsed.from_, FROM)
    envelope = parsed.return_path if envelope_from is None else envelope_from
    candidates = [
        (Address(_bare(envelope)) if envelope else None, ENVELOPE),
        (parsed.reply_to[0] if parsed.reply_to else None, REPLY_TO),
        (parsed.sender, SENDER),
    ]
    for address, source in candidates:
        if address is not None and _usable(address.email) and not _ours(address.email, config):
            return Sender(address, source)
    return None


def _bare(envelope: str) -> str:
    return envelope.strip().strip("<>").strip().lower()


def _usable(email: str) -> bool:
    local, at, domain = email.rpartition("@")
    return bool(at and local and domain) and local not in _NOBODY and not address_problem(email)


def _ours(email: str, config: Config | None) -> bool:
    return config is not None and config.base_address(email) is not None


def load_senders(session: Session, incomings: Iterable[Incoming], config: Config) -> None:
    """Look up the senders of a batch of messages at once: one query instead of one each.

    Unusable addresses are left to ``identify``, which refuses their message with the reason.
    """
    found = (sender_address(i.parsed, i.envelope_from, config) for i in incomings)
    load_contacts(session, (s.address.email for s in found if s is not None))


def usable_sender(
    parsed: ParsedMessage, envelope_from: str | None = None, config: Config | None = None
) -> Sender | None:
    """``sender_address``; MessageParseError when there is none and the From cannot be
    anyone's mailbox, naming what is wrong with it."""
    found = sender_address(parsed, envelope_from, config)
    problem = address_problem(parsed.from_.email) if parsed.from_ is not None else None
    if found is None and parsed.from_ is not None and problem is not None:
        email = parsed.from_.email
        shown = f"{email[:40]}..." if len(email) > 40 else email
        raise MessageParseError(f"the sender's address {shown!r} is unusable: {problem}")
    return found


def identify(session: Session, incoming: Incoming, config: Config, now: datetime) -> People:
    parsed = incoming.parsed
    found = usable_sender(parsed, incoming.envelope_from, config)
    sender = get_or_create_contact(session, found.address, now) if found else None
    if found is not None and found.source != FROM:
        log.info(
            "message %s: no usable From, the sender is the %s %s",
            f"<{parsed.message_id}>" if parsed.message_id else "without Message-ID",
            found.source,
            found.address.email,
        )
    operators = operator_emails(session)
    excluded = config.support_addresses | operators
    if sender is not None:
        excluded |= {sender.email}
    seen: set[str] = set()
    copied: list[Contact] = []
    for address in (*parsed.to, *parsed.cc):
        if address.email in excluded or address.email in seen or config.base_address(address.email):
            continue
        if len(copied) >= MAX_COPIED:
            break
        seen.add(address.email)
        copied.append(get_or_create_contact(session, address, now))
    return People(
        sender=sender,
        copied=tuple(copied),
        operator_addresses=operators,
        sender_source=found.source if found else FROM,
    )
