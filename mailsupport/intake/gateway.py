"""The mail gateway: one message on standard input, stored before the exit code says so.

Postfix (or any MTA) pipes a message in; exit 0 means it is durably stored, 75 (EX_TEMPFAIL)
tells the MTA to keep it and try again later.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock
from mailsupport.core.screen import is_null_sender
from mailsupport.db.engine import driver_message
from mailsupport.db.inbox import RawMail, Stored, store_one
from mailsupport.errors import StorageError

EX_OK = 0
EX_TEMPFAIL = 75


def deliver(
    factory: sessionmaker[Session],
    clock: Clock,
    raw: bytes,
    *,
    envelope_from: str | None = None,
    recipients: tuple[str, ...] = (),
) -> Stored:
    if not raw.strip():
        raise StorageError("empty message on standard input")
    if is_null_sender(envelope_from):
        envelope_from = ""  # Postfix's ${sender} for <>, unless pipe's null_sender= is set
    mail = RawMail(
        raw=raw,
        channel="gateway",
        envelope_from=envelope_from,
        envelope_to=tuple(r.lower() for r in recipients),
    )
    try:
        with factory.begin() as session:
            return store_one(session, mail, clock.now())
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot store the message: {driver_message(exc)}") from exc
