"""The mail gateway: one message on standard input, stored before the exit code says so.

Postfix (or any MTA) pipes a message in; exit 0 means it is durably stored, 75 (EX_TEMPFAIL)
tells the MTA to keep it and try again later.

The MTA starts a process for every message, so what that process imports is most of what a
message costs: into a SQLite database at this version's schema the message goes through the
sqlite3 driver alone (db/sqlite_store.py), and SQLAlchemy is loaded only for anything else.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailsupport.clock import Clock
from mailsupport.config import Config
from mailsupport.core.nullsender import is_null_sender
from mailsupport.db.rawmail import RawMail, Stored
from mailsupport.db.sqlite_conn import url_key
from mailsupport.db.sqlite_store import Unopened, store_if_current
from mailsupport.errors import StorageError, first_line

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session, sessionmaker

EX_OK = 0
EX_TEMPFAIL = 75


def deliver(
    config: Config,
    open_factory: Callable[[], sessionmaker[Session]],
    clock: Clock,
    raw: bytes,
    *,
    envelope_from: str | None = None,
    recipients: tuple[str, ...] = (),
) -> Stored:
    """Store one message; ``open_factory`` opens the database the full way, if it is needed."""
    if not raw.strip():
        raise StorageError("empty message on standard input")
    if is_null_sender(envelope_from):
        envelope_from = ""  # Postfix's ${sender} for <>, unless pipe's null_sender= is set
    mail = RawMail(
        raw=raw,
        channel="gateway",
        envelope_from=envelope_from,
        envelope_to=tuple(r.lower() for r in recipients),
        # Run by the local MTA, which wrote the topmost Authentication-Results, if any.
        authres_trusted=True,
    )
    now = clock.now()
    stored = _store_in_sqlite(config, mail, now)
    return stored if stored is not None else _store_in_session(open_factory(), mail, now)


def _store_in_sqlite(config: Config, mail: RawMail, now: datetime) -> Stored | None:
    url = config.database.url
    try:
        return store_if_current(url, config.database.busy_timeout, mail, now)
    except Unopened as exc:
        raise StorageError(
            f"Cannot open the database {url} ({url_key(url)}): {first_line(exc.__cause__)}"
        ) from exc
    except sqlite3.Error as exc:
        raise StorageError(f"cannot store the message: {first_line(exc)}") from exc


def _store_in_session(factory: sessionmaker[Session], mail: RawMail, now: datetime) -> Stored:
    # Only here, past the sqlite3 path, is SQLAlchemy worth its import.
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from mailsupport.db.engine import driver_message  # noqa: PLC0415
    from mailsupport.db.inbox import store_one  # noqa: PLC0415

    try:
        with factory.begin() as session:
            return store_one(session, mail, now)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot store the message: {driver_message(exc)}") from exc
