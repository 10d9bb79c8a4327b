"""Stored mail in a worker's hands, counted before the work starts.

A message that kills the worker processing it (the OOM killer, a crash in a C extension, the
time limit) leaves no trace of its own: the transaction is gone with the worker. So a worker
first takes the messages it is about to process, in a transaction committed before it parses
any of them: each one's ``takes`` goes up and the row names the worker. A message the worker
finishes (processed or quarantined) keeps its count, which no longer matters; one it puts back
undone (a database error, retried later) has its count taken back. Whenever a message is taken,
its count therefore says how many workers died with it in their hands.

A worker may take a message nobody holds, one whose holder's lease has run out (a worker of
another daemon, dead or hung), or one held by its own place in the pool (its predecessor there,
which died). A daemon starting frees what earlier runs of it held (``release_previous``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from mailsupport.db.instance import Owner
from mailsupport.db.models import Inbound, InboundState, table_of

_INBOUND = table_of(Inbound)
_C = _INBOUND.c


@dataclass(frozen=True)
class Holder:
    """A place in a daemon's pool of workers: whoever fills it holds what it took."""

    owner: Owner
    slot: int


def _held_by(holder: Holder) -> ColumnElement[bool]:
    return and_(
        _C.taken_by == holder.owner.instance,
        _C.taken_started == holder.owner.started,
        _C.taken_slot == holder.slot,
    )


def earlier_takes(session: Session, inbound_ids: Sequence[int]) -> dict[int, int]:
    """How often each of these messages was taken and not finished with (0s left out)."""
    statement = select(_C.id, _C.takes).where(
        _C.id.in_(bindparam("ids", expanding=True)), _C.takes > 0
    )
    return {row.id: row.takes for row in session.execute(statement, {"ids": list(inbound_ids)})}


def take(
    session: Session,
    inbound_ids: Sequence[int],
    holder: Holder,
    now: datetime,
    lease: timedelta,
) -> dict[int, int]:
    """Take those of ``inbound_ids`` that are pending and free for ``holder``. Does not commit.

    Returns, for each message taken, how often it had been taken before without being
    finished with: the number of workers that died while it was in their hands.
    """
    free = or_(_C.taken_by.is_(None), _C.taken_until < now, _held_by(holder))
    rows = session.execute(
        select(_C.id, _C.takes)
        .where(_C.id.in_(list(inbound_ids)), _C.state == InboundState.PENDING, free)
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        session.execute(
            update(_INBOUND)
            .where(_C.id.in_([row.id for row in rows]))
            .values(
                takes=_C.takes + 1,
                taken_by=holder.owner.instance,
                taken_started=holder.owner.started,
                taken_slot=holder.slot,
                taken_until=now + lease,
            )
        )
    return {row.id: row.takes for row in rows}


def release(session: Session, inbound_ids: Sequence[int], holder: Holder) -> None:
    """Put back, undone, messages ``holder`` took: their count is as before. Does not commit."""
    session.execute(
        update(_INBOUND)
        .where(_C.id.in_(list(inbound_ids)), _C.state == InboundState.PENDING, _held_by(holder))
        .values(takes=_C.takes - 1, taken_by=None, taken_until=None)
    )


def release_previous(session: Session, owner: Owner) -> int:
    """Free what earlier runs of this daemon held, keeping the count. Does not commit.

    Those runs are dead (the instance lock says so), and so are their workers: the messages
    need not wait for the leases meant for other daemons.
    """
    result = session.execute(
        update(_INBOUND)
        .where(
            _C.state == InboundState.PENDING,
            _C.taken_by == owner.instance,
            _C.taken_started < owner.started,
        )
        .values(taken_by=None, taken_until=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)
