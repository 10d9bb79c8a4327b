"""The inbox: raw mail stored verbatim and deduplicated, before anything else happens."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from mailsupport.core.limits import CONTROL
from mailsupport.db.models import Disposition, Inbound, InboundRaw, InboundState, table_of
from mailsupport.db.rawmail import RawMail, Stored
from mailsupport.db.upsert import prepared_insert_ignoring_conflict

# RawMail and Stored live where the mail gateway can have them without SQLAlchemy.
__all__ = ["RawMail", "Share", "Stored", "pending_ids", "store_many", "store_one"]

_INBOUND = table_of(Inbound)
_INSERT_RAW = insert(table_of(InboundRaw))
_UNIQUE_KEY = ("dedupe_key",)
# SQLite copies a bound blob twice, binding it and building the record: a 9 MB mail cost the
# listener 18 MB more. Mail from this size on is inserted as zeros and written through
# SQLite's blob I/O, a page at a time.
BLOB_IO_AT_LEAST = 256 * 1024
_BLOB_PIECE = 1 << 20
_STORED_KEYS = select(_INBOUND.c.dedupe_key, _INBOUND.c.id).where(
    _INBOUND.c.dedupe_key.in_(bindparam("keys", expanding=True))
)


def store_many(session: Session, mails: Sequence[RawMail], now: datetime) -> list[Stored]:
    """Insert each mail unless an identical one is already stored. Does not commit.

    A mail whose key is stored already, or appears earlier in ``mails``, is a duplicate.
    """
    if not mails:
        return []
    connection = session.connection()
    keys = [mail.key.key for mail in mails]
    stored = _stored_ids(connection, set(keys))
    first: dict[str, RawMail] = {}
    for mail, key in zip(mails, keys, strict=True):
        if key not in stored:
            first.setdefault(key, mail)
    new_ids: dict[str, int] = {}
    if first:
        # All new mail in one multi-row INSERT: the listener's writer holds the write lock for
        # it, and each statement hands the interpreter lock back to the SMTP loop and waits.
        rows = [_inbound_row(mail, now) for mail in first.values()]
        statement = prepared_insert_ignoring_conflict(session, _INBOUND, _UNIQUE_KEY, _UNIQUE_KEY)
        inserted = connection.execute(statement, rows).all()
        new_ids = {key: inbound_id for inbound_id, key in inserted}
        if len(new_ids) < len(first):  # stored meanwhile by another daemon
            missing = [key for key in first if key not in new_ids]
            stored.update(_stored_ids(connection, missing))
        _insert_raws(connection, [(new_ids[key], first[key].raw) for key in new_ids])
    pairs = zip(mails, keys, strict=True)
    return [_stored(key, mail, first, new_ids, stored) for mail, key in pairs]


def _insert_raws(connection: Connection, raws: list[tuple[int, bytes]]) -> None:
    driver = connection.connection.driver_connection
    blob_io = connection.dialect.name == "sqlite" and hasattr(driver, "blobopen")
    big = [(i, raw) for i, raw in raws if blob_io and len(raw) >= BLOB_IO_AT_LEAST]
    written = {i for i, _ in big}
    bound = [{"inbound_id": i, "raw": raw} for i, raw in raws if i not in written]
    if bound:
        connection.execute(_INSERT_RAW, bound)
    for inbound_id, raw in big:
        zeros = _INSERT_RAW.values(inbound_id=inbound_id, raw=func.zeroblob(len(raw)))
        rowid = connection.execute(zeros).lastrowid
        with driver.blobopen("inbound_raw", "raw", rowid) as blob:  # type: ignore[union-attr]
            view = memoryview(raw)
            for start in range(0, len(raw), _BLOB_PIECE):
                blob.write(view[start : start + _BLOB_PIECE])


def _stored_ids(connection: Connection, keys: Collection[str]) -> dict[str, int]:
    rows = connection.execute(_STORED_KEYS, {"keys": list(keys)}).all()
    return {key: inbound_id for key, inbound_id in rows}


def _printable(address: str | None) -> str | None:
    # Kept for display and bounce matching only; a NUL would make PostgreSQL refuse the row,
    # and with it every mail of the batch.
    return None if address is None else CONTROL.sub("", address)[:998]


def _inbound_row(mail: RawMail, now: datetime) -> dict[str, Any]:
    return {
        "dedupe_key": mail.key.key,
        "message_id": mail.key.message_id,
        "channel": mail.channel,
        "envelope_from": _printable(mail.envelope_from),
        "envelope_to": list(mail.envelope_to),
        "received_at": now,
        "size": len(mail.raw),
        "state": InboundState.PENDING,
        "screen_reasons": [],
        "no_auto_reply": False,
        "attempts": 0,
        "queue": mail.queue,
        "authres_trusted": mail.authres_trusted,
    }


def _stored(
    key: str,
    mail: RawMail,
    first: dict[str, RawMail],
    new_ids: dict[str, int],
    stored: dict[str, int],
) -> Stored:
    if key in new_ids:
        return Stored(new_ids[key], duplicate=first[key] is not mail)
    return Stored(stored[key], duplicate=True)


def store_one(session: Session, mail: RawMail, now: datetime) -> Stored:
    return store_many(session, [mail], now)[0]


@dataclass(frozen=True)
class Share:
    """Which pending mail a worker looks at: ids with ``id % of == index``, or only old ones.

    Workers that each take their own share never parse one message twice; a worker with no
    share of its own left takes any mail stored before ``stored_before``, which a busy or
    stopped worker has left behind.
    """

    index: int = 0
    of: int = 1
    stored_before: datetime | None = None


def pending_ids(
    session: Session, limit: int = 100, after_id: int = 0, share: Share | None = None
) -> list[int]:
    columns = _INBOUND.c
    statement = (
        select(columns.id)
        .where(columns.state == InboundState.PENDING, columns.id > after_id)
        .order_by(columns.id)
        .limit(limit)
    )
    if share is not None and share.of > 1:
        statement = statement.where(columns.id % share.of == share.index)
    if share is not None and share.stored_before is not None:
        statement = statement.where(columns.received_at < share.stored_before)
    return list(session.execute(statement).scalars())


# What ``inbox list --outcome`` takes: before processing, each Disposition, or set aside.
OUTCOMES = (InboundState.PENDING, *Disposition, InboundState.QUARANTINED)


def outcome_of(row: Inbound) -> str:
    """Pending, quarantined, or what processing made of the message."""
    if row.state == InboundState.PROCESSED:
        return row.disposition or row.state
    return row.state


def list_inbox(
    session: Session, outcome: str | None = None, limit: int | None = None
) -> Sequence[Inbound]:
    """Stored messages, newest first; with ``outcome``, only those (one of ``OUTCOMES``)."""
    statement = select(Inbound).order_by(Inbound.id.desc())
    if outcome in (InboundState.PENDING, InboundState.QUARANTINED):
        statement = statement.where(Inbound.state == outcome)
    elif outcome is not None:
        statement = statement.where(
            Inbound.disposition == outcome, Inbound.state == InboundState.PROCESSED
        )
    if limit:
        statement = statement.limit(limit)
    return session.execute(statement).scalars().all()
