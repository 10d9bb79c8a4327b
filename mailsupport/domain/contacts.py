"""Contacts: created from the addresses and display names mail arrives with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mailsupport.core.message import Address
from mailsupport.db.models import Contact
from mailsupport.db.upsert import insert_ignoring_conflict

_BY_EMAIL = select(Contact).where(Contact.email == bindparam("email"))


def get_or_create_contact(session: Session, address: Address, now: datetime) -> Contact:
    """The contact for an address, created if new; a missing display name is filled in.

    The insert ignores a concurrent creation of the same address, so two messages from one new
    customer processed at once both end up with the one contact.
    """
    email = address.email.lower()
    contact = session.execute(_BY_EMAIL, {"email": email}).scalar_one_or_none()
    if contact is None:
        values = {"email": email, "name": address.name[:200], "created_at": now}
        insert = insert_ignoring_conflict(session, Contact, values, ["email"])
        contact = session.execute(insert.returning(Contact)).scalar_one_or_none()
        if contact is None:  # created meanwhile by a concurrent writer
            contact = session.execute(_BY_EMAIL, {"email": email}).scalar_one()
    elif address.name and not contact.name:
        contact.name = address.name[:200]
    return contact


def find_contact(session: Session, email: str) -> Contact | None:
    return session.execute(_BY_EMAIL, {"email": email.lower()}).scalar_one_or_none()
