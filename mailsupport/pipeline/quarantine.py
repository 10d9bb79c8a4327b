"""Quarantined messages: list them, show one, and replay them through the pipeline."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsupport.db.models import STORABLE_IDS, Inbound, InboundState
from mailsupport.errors import InvalidValueError, NotFoundError
from mailsupport.pipeline.runner import Outcome, Pipeline


def list_quarantined(session: Session) -> Sequence[Inbound]:
    return (
        session.execute(
            select(Inbound).where(Inbound.state == InboundState.QUARANTINED).order_by(Inbound.id)
        )
        .scalars()
        .all()
    )


def get_inbound(session: Session, inbound_id: int) -> Inbound:
    row = session.get(Inbound, inbound_id) if inbound_id in STORABLE_IDS else None
    if row is None:
        raise NotFoundError(f"No such stored message: {inbound_id}")
    return row


def replay(pipeline: Pipeline, inbound_id: int) -> Outcome | None:
    """Put a quarantined message back in the queue and run the pipeline on it now."""
    with pipeline.factory.begin() as session:
        row = get_inbound(session, inbound_id)
        if row.state != InboundState.QUARANTINED:
            raise InvalidValueError(f"Message {inbound_id} is not quarantined (it is {row.state})")
        row.state = InboundState.PENDING
        row.attempts = 0
        row.takes = 0  # workers that died with it: replayed, it starts afresh
        row.taken_by = None
    return pipeline.process_one(inbound_id)
