"""Identify step: turn the sender and the people copied into contacts.

Contacts are created from the addresses and display names the mail carries. Nothing here
grants privileges: an address in a From header proves nothing. A sender address that cannot
be anyone's mailbox stops the message here: a ticket needs someone it can answer.
"""

from __future__ import annotations

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

# Mail copied to hundreds of people is a newsletter or spam, not a conversation to join.
MAX_COPIED = 50


@dataclass(frozen=True)
class People:
    sender: Contact | None  # None when the mail names nobody we could answer
    copied: tuple[Contact, ...]  # other recipients who may take part: To and Cc, not us
    # Every address an operator writes from (active or not): only mail from one of these
    # needs the operator step's lookups.
    operator_addresses: frozenset[str] = frozenset()


def sender_address(parsed: ParsedMessage) -> Address | None:
    """The From mailbox; without one, the first Reply-To, then the non-null return path."""
    if parsed.from_ is not None:
        return parsed.from_
    if parsed.reply_to:
        return parsed.reply_to[0]
    if parsed.return_path and "@" in parsed.return_path:
        return Address(parsed.return_path)
    return None


def load_senders(session: Session, messages: Iterable[ParsedMessage]) -> None:
    """Look up the senders of a batch of messages at once: one query instead of one each.

    Unusable addresses are left to ``identify``, which refuses their message with the reason.
    """
    addresses = (sender_address(parsed) for parsed in messages)
    load_contacts(
        session,
        (a.email for a in addresses if a is not None and address_problem(a.email) is None),
    )


def usable_sender(parsed: ParsedMessage) -> Address | None:
    """``sender_address``; MessageParseError when it cannot be anyone's mailbox."""
    address = sender_address(parsed)
    problem = address_problem(address.email) if address is not None else None
    if address is not None and problem is not None:
        shown = f"{address.email[:40]}..." if len(address.email) > 40 else address.email
        raise MessageParseError(f"the sender's address {shown!r} is unusable: {problem}")
    return address


def identify(session: Session, parsed: ParsedMessage, config: Config, now: datetime) -> People:
    address = usable_sender(parsed)
    sender = get_or_create_contact(session, address, now) if address else None
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
    return People(sender=sender, copied=tuple(copied), operator_addresses=operators)
