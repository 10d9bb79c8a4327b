"""The inbox: raw mail stored verbatim and deduplicated, before anything else happens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailsupport.core.dedupe import dedupe_key
from mailsupport.db.models import Inbound, InboundRaw, InboundState

_INBOUND: Table = Inbound.__table__  # type: ignore[assignment]
_INSERT_RAW = insert(InboundRaw)
_INSERTS: dict[str, Any] = {}


@dataclass(frozen=True)
class RawMail:
    """A message as a channel received it."""

    raw: bytes
    channel: str
    envelope_from: str | None = None
    envelope_to: tuple[str, ...] = field(default_factory=tuple)
    queue: str | None = None  # the queue new tickets go to, when the channel decides it


@dataclass(frozen=True)
class Stored:
    inbound_id: int
    duplicate: bool


def _insert_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id on the table, built once per backend.

    The listener's writer runs this for every message while holding the interpreter lock the
    SMTP loop needs: an ORM insert built per message cost more than the disk flush, a Core
    statement with bound parameters is compiled once and reused.
    """
    statement = _INSERTS.get(dialect)
    if statement is None:
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = (
            insert(_INBOUND)
            .on_conflict_do_nothing(index_elements=[_INBOUND.c.dedupe_key])
            .returning(_INBOUND.c.id)
        )
        _INSERTS[dialect] = statement
    return statement


def store_many(session: Session, mails: Sequence[RawMail], now: datetime) -> list[Stored]:
    """Insert each mail unless an identical one is already stored. Does not commit."""
    connection = session.connection()
    statement = _insert_statement(connection.dialect.name)
    results: list[Stored] = []
    new_bytes: list[dict[str, Any]] = []
    for mail in mails:
        key = dedupe_key(mail.raw)
        new_id = connection.execute(
            statement,
            {
                "dedupe_key": key.key,
                "message_id": key.message_id,
                "channel": mail.channel,
                "envelope_from": mail.envelope_from,
                "envelope_to": list(mail.envelope_to),
                "received_at": now,
                "size": len(mail.raw),
                "state": InboundState.PENDING,
                "screen_reasons": [],
                "no_auto_reply": False,
                "attempts": 0,
                "queue": mail.queue,
            },
        ).scalar_one_or_none()
        if new_id is not None:
            results.append(Stored(new_id, duplicate=False))
            new_bytes.append({"inbound_id": new_id, "raw": mail.raw})
            continue
        existing = connection.execute(
            select(_INBOUND.c.id).where(_INBOUND.c.dedupe_key == key.key)
        ).scalar_one()
        results.append(Stored(existing, duplicate=True))
    if new_bytes:
        connection.execute(_INSERT_RAW, new_bytes)
    return results


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
    statement = (
        select(Inbound.id)
        .where(Inbound.state == InboundState.PENDING, Inbound.id > after_id)
        .order_by(Inbound.id)
        .limit(limit)
    )
    if share is not None and share.of > 1:
        statement = statement.where(Inbound.id % share.of == share.index)
    if share is not None and share.stored_before is not None:
        statement = statement.where(Inbound.received_at < share.stored_before)
    return list(session.execute(statement).scalars())
