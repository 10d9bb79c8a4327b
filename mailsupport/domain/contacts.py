"""Contacts: created from the addresses and display names mail arrives with.

A contact found or created is kept in the session until its transaction ends (contacts are
never deleted, and an address never changes): the pipeline applies a batch of messages in one
transaction, and loads the contacts of all their senders with one query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.limits import address_problem
from mailsupport.core.message import Address
from mailsupport.db.memo import ends_with_transaction
from mailsupport.db.models import Contact
from mailsupport.db.upsert import insert_ignoring_conflict
from mailsupport.errors import InvalidValueError

# What an admin types as an address: one mailbox, no display name or angle brackets.
_TYPED_EMAIL = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")

_BY_EMAIL = select(Contact).where(Contact.email == bindparam("email"))
_BY_EMAILS = select(Contact).where(Contact.email.in_(bindparam("emails", expanding=True)))
_KNOWN = "mailsupport.known_contacts"
ends_with_transaction(_KNOWN)


def typed_email(text: str) -> str:
    """An address given on the command line, lower-cased; refused when it is not one."""
    email = text.strip().lower()
    if not _TYPED_EMAIL.match(email) or address_problem(email) is not None:
        raise InvalidValueError(f"Not an email address: {email}")
    return email


def refuse_own_address(config: Config, address: str, *, because: str = "") -> None:
    """Refuse an address mailsupport receives mail at (any ``+extension`` aside) as a person's.

    Mail sent to it would come back in as new mail; ``because`` says what that would mean here.
    """
    key = config.own_address_key(address)
    if key is not None:
        reason = f": {because}" if because else ""
        raise InvalidValueError(
            f"{address.strip().lower()} is an address of mailsupport's own ({key}){reason}"
        )


def load_contacts(session: Session, emails: Iterable[str]) -> None:
    """Look up the contacts of these addresses in one query, for the lookups that follow."""
    known = _known(session)
    wanted = sorted({email.lower() for email in emails} - known.keys())
    if wanted:
        for contact in session.execute(_BY_EMAILS, {"emails": wanted}).scalars():
            known[contact.email] = contact


def get_or_create_contact(session: Session, address: Address, now: datetime) -> Contact:
    """The contact for an address, created if new; a missing display name is filled in.

    The insert ignores a concurrent creation of the same address, so two messages from one new
    customer processed at once both end up with the one contact.
    """
    email = address.email.lower()
    contact = find_contact(session, email)
    if contact is None:
        values = {"email": email, "name": address.name[:200], "created_at": now}
        insert = insert_ignoring_conflict(session, Contact, values, ["email"])
        contact = session.execute(insert.returning(Contact)).scalar_one_or_none()
        if contact is None:  # created meanwhile by a concurrent writer
            contact = session.execute(_BY_EMAIL, {"email": email}).scalar_one()
        _known(session)[email] = contact
    elif address.name and not contact.name:
        contact.name = address.name[:200]
    return contact


def find_contact(session: Session, email: str) -> Contact | None:
    email = email.lower()
    known = _known(session)
    if email not in known:
        contact = session.execute(_BY_EMAIL, {"email": email}).scalar_one_or_none()
        if contact is None:
            return None  # not kept: it may be created later in the transaction
        known[email] = contact
    return known[email]


def _known(session: Session) -> dict[str, Contact]:
    known: dict[str, Contact] = session.info.setdefault(_KNOWN, {})
    return known
