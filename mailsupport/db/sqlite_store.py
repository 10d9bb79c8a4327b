"""Storing one message in SQLite through the sqlite3 driver alone, for ``mailsupport deliver``.

An MTA starts the gateway once for every message, and importing SQLAlchemy and the models cost
several times what storing the message does. This writes the same two rows as
``db.inbox.store_one`` (tests/test_gateway_import.py compares them column by column) with the
settings of the engine's connections: WAL, ``synchronous=FULL``, the short-step wait for the
write lock. It does so only in a database already at the schema this version writes; with
none yet, or another revision, it stores nothing and says so, and the caller goes the full
way, which creates, upgrades or refuses the database with its usual errors.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime

from mailsupport.core.limits import CONTROL
from mailsupport.db.rawmail import RawMail, Stored
from mailsupport.db.schema import HEAD, REVISIONS_QUERY
from mailsupport.db.sqlite_conn import begin_immediate, configure, sqlite_file

_INSERT_INBOUND = (
    "INSERT INTO inbound (dedupe_key, message_id, channel, envelope_from, envelope_to,"
    " received_at, size, state, screen_reasons, no_auto_reply, attempts, queue, authres_trusted)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', '[]', 0, 0, ?, ?)"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
)
_INSERT_RAW = "INSERT INTO inbound_raw (inbound_id, raw) VALUES (?, ?)"
_STORED_ID = "SELECT id FROM inbound WHERE dedupe_key = ?"


class Unopened(Exception):
    """The database could not be opened; the driver's error is the cause."""


def store_if_current(url: str, busy_timeout: float, mail: RawMail, now: datetime) -> Stored | None:
    """Store ``mail`` (once: a duplicate is found by its key), committed to disk; None when
    ``url`` is no plain SQLite file, or names none yet, or one not at this version's schema.

    Raises ``Unopened`` when the database cannot be opened, ``sqlite3.Error`` when storing
    fails (the write lock taken for longer than ``busy_timeout`` among others).
    """
    path = sqlite_file(url)
    if path is None or not os.path.isfile(path):
        return None
    values = _values(mail, now)  # the mail hashed before the write lock is taken
    with closing(_open(path, busy_timeout)) as db:
        if not _at_head(db):
            return None
        begin_immediate(db, busy_timeout)
        try:
            stored = _insert(db, mail, values)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return stored


def _open(path: str, busy_timeout: float) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, timeout=busy_timeout)
    except sqlite3.Error as exc:
        raise Unopened from exc
    try:
        configure(db, synchronous="FULL", checkpoint_pages=1000, busy_timeout=busy_timeout)
    except sqlite3.Error as exc:
        db.close()
        raise Unopened from exc
    return db


def _at_head(db: sqlite3.Connection) -> bool:
    try:
        rows = db.execute(REVISIONS_QUERY).fetchall()
    except sqlite3.OperationalError:
        return False  # no version table: a database no version of mailsupport has set up
    return rows == [(HEAD,)]


def _insert(db: sqlite3.Connection, mail: RawMail, values: tuple[object, ...]) -> Stored:
    row = db.execute(_INSERT_INBOUND, values).fetchone()
    if row is None:  # stored before, by any channel
        (inbound_id,) = db.execute(_STORED_ID, (mail.key.key,)).fetchone()
        return Stored(inbound_id, duplicate=True)
    db.execute(_INSERT_RAW, (row[0], mail.raw))
    return Stored(row[0], duplicate=False)


def _values(mail: RawMail, now: datetime) -> tuple[object, ...]:
    envelope_from = mail.envelope_from
    if envelope_from is not None:
        # As db.inbox does: for display and bounce matching only, never a reason to refuse.
        envelope_from = CONTROL.sub("", envelope_from)[:998]
    return (
        mail.key.key,
        mail.key.message_id,
        mail.channel,
        envelope_from,
        json.dumps(list(mail.envelope_to)),
        _sqlite_datetime(now),
        len(mail.raw),
        mail.queue,
        mail.authres_trusted,
    )


def _sqlite_datetime(value: datetime) -> str:
    """A UTC instant as SQLAlchemy writes a DateTime in SQLite."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
