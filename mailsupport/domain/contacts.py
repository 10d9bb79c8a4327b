"""Contacts: created from the addresses and display names mail arrives with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailsupport.core.message import Address
from mailsupport.db.models import Contact


def get_or_create_contact(session: Session, address: Address, now: datetime) -> Contact:
    """The contact for an address, created if new; a missing display name is filled in.

    The insert ignores a concurrent creation of the same address, so two messages from one new
    customer processed at once both end up with the one contact.
    """
    email = address.email.lower()
    contact = session.execute(select(Contact).where(Contact.email == email)).scalar_one_or_none()
    if contact is None:
        insert = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
        session.execute(
            insert(Contact)
            .values(email=email, name=address.name[:200], created_at=now)
            .on_conflict_do_nothing(index_elements=["email"])
        )
        contact = session.execute(select(Contact).where(Contact.email == email)).scalar_one()
    elif address.name and not contact.name:
        contact.name = address.name[:200]
    return contact


def find_contact(session: Session, email: str) -> Contact | None:
    return session.execute(
        select(Contact).where(Contact.email == email.lower())
    ).scalar_one_or_none()
