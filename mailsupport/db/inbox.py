"""The inbox: raw mail stored verbatim and deduplicated, before anything else happens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailsupport.core.dedupe import dedupe_key
from mailsupport.db.models import Inbound, InboundState


@dataclass(frozen=True)
class RawMail:
    """A message as a channel received it."""

    raw: bytes
    channel: str
    envelope_from: str | None = None
    envelope_to: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Stored:
    inbound_id: int
    duplicate: bool


def store_many(session: Session, mails: Sequence[RawMail], now: datetime) -> list[Stored]:
    """Insert each mail unless an identical one is already stored. Does not commit."""
    dialect = session.get_bind().dialect.name
    insert_cls = sqlite.insert if dialect == "sqlite" else postgresql.insert
    results: list[Stored] = []
    for mail in mails:
        key = dedupe_key(mail.raw)
        statement = (
            insert_cls(Inbound)
            .values(
                dedupe_key=key.key,
                message_id=key.message_id,
                channel=mail.channel,
                envelope_from=mail.envelope_from,
                envelope_to=list(mail.envelope_to),
                received_at=now,
                size=len(mail.raw),
                raw=mail.raw,
                state=InboundState.PENDING,
                screen_reasons=[],
                no_auto_reply=False,
                attempts=0,
            )
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(Inbound.id)
        )
        new_id = session.execute(statement).scalar_one_or_none()
        if new_id is not None:
            results.append(Stored(new_id, duplicate=False))
            continue
        existing = session.execute(
            select(Inbound.id).where(Inbound.dedupe_key == key.key)
        ).scalar_one()
        results.append(Stored(existing, duplicate=True))
    return results


def store_one(session: Session, mail: RawMail, now: datetime) -> Stored:
    return store_many(session, [mail], now)[0]


def pending_ids(session: Session, limit: int = 100, after_id: int = 0) -> list[int]:
    rows = session.execute(
        select(Inbound.id)
        .where(Inbound.state == InboundState.PENDING, Inbound.id > after_id)
        .order_by(Inbound.id)
        .limit(limit)
    )
    return list(rows.scalars())
