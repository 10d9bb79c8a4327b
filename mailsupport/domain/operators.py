"""Operators: the people who answer tickets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, func, select, union_all
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.db.memo import forget, remembered
from mailsupport.db.models import Operator, OperatorAddress, OperatorQueue, Queue
from mailsupport.domain.contacts import refuse_own_address, typed_email
from mailsupport.errors import InvalidValueError, NotFoundError

# Prepared once: the pipeline asks these for every message.
_EVERY_ADDRESS = union_all(select(Operator.email), select(OperatorAddress.address))
_QUEUE_MEMBERS = (
    select(Operator)
    .join(OperatorQueue, OperatorQueue.operator_id == Operator.id)
    .where(OperatorQueue.queue_id == bindparam("queue_id"), Operator.active.is_(True))
    .order_by(Operator.email)
)


def refuse_operator_address(config: Config, address: str) -> None:
    """Refuse an address mailsupport receives mail at as an operator's.

    Mail to the operator would come back in as new mail, and mail from that address would
    pass for the operator's.
    """
    refuse_own_address(config, address, because="mail to the operator would come back to it")


def add_operator(session: Session, email: str, name: str, now: datetime) -> Operator:
    email = typed_email(email)
    if not name.strip():
        raise InvalidValueError("An operator needs a name (--name)")
    existing = session.execute(select(Operator).where(Operator.email == email)).scalar_one_or_none()
    if existing is not None:
        raise InvalidValueError(f"Operator already exists: {email}")
    operator = Operator(email=email, name=name.strip(), active=True, created_at=now)
    session.add(operator)
    session.flush()
    forget(session)
    return operator


def list_operators(session: Session) -> Sequence[Operator]:
    return session.execute(select(Operator).order_by(Operator.email)).scalars().all()


def find_operator(session: Session, ref: str) -> Operator:
    """An operator by email, by the local part of their email, or by name."""
    ref = ref.strip()
    lowered = ref.lower()
    candidates = (
        session.execute(
            select(Operator).where(
                (Operator.email == lowered)
                | (func.lower(Operator.name) == lowered)
                | Operator.email.startswith(lowered + "@", autoescape=True)
            )
        )
        .scalars()
        .all()
    )
    exact = [op for op in candidates if op.email == lowered]
    matches = exact or list(candidates)
    if not matches:
        raise NotFoundError(f"No such operator: {ref}")
    if len(matches) > 1:
        raise InvalidValueError(f"Ambiguous operator {ref}: use their email address")
    return matches[0]


def operator_emails(session: Session) -> frozenset[str]:
    """Every address operators write from, theirs and alternate ones."""
    return remembered(
        session, "operator_emails", lambda: frozenset(session.execute(_EVERY_ADDRESS).scalars())
    )


def refuse_operator_as_participant(session: Session, email: str) -> None:
    """Refuse an operator's address as someone taking part in a ticket as a customer."""
    if email.strip().lower() in operator_emails(session):
        raise InvalidValueError(
            f"{email.strip().lower()} is an operator's address: operators get a ticket's mail "
            "as operators, never as one of its customers"
        )


def remove_operator(session: Session, ref: str) -> Operator:
    """Deactivate an operator: their history stays, they get no more mail and prove nothing."""
    operator = find_operator(session, ref)
    operator.active = False
    forget(session)
    return operator


def operator_by_address(session: Session, address: str) -> Operator | None:
    """The active operator writing from this address (their own or an alternate one)."""
    address = address.strip().lower()
    operator = session.execute(
        select(Operator).where(Operator.email == address, Operator.active.is_(True))
    ).scalar_one_or_none()
    if operator is not None:
        return operator
    return session.execute(
        select(Operator)
        .join(OperatorAddress, OperatorAddress.operator_id == Operator.id)
        .where(OperatorAddress.address == address, Operator.active.is_(True))
    ).scalar_one_or_none()


def add_address(session: Session, operator: Operator, address: str) -> None:
    address = typed_email(address)
    taken = session.execute(select(Operator.id).where(Operator.email == address)).first()
    other = session.execute(
        select(OperatorAddress.operator_id).where(OperatorAddress.address == address)
    ).scalar_one_or_none()
    if taken is not None or other is not None:
        raise InvalidValueError(f"Address already belongs to an operator: {address}")
    session.add(OperatorAddress(operator_id=operator.id, address=address))
    forget(session)


def remove_address(session: Session, operator: Operator, address: str) -> None:
    row = session.execute(
        select(OperatorAddress).where(
            OperatorAddress.operator_id == operator.id,
            OperatorAddress.address == address.strip().lower(),
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"{operator.email} has no address {address}")
    session.delete(row)
    forget(session)


def addresses_of(session: Session, operator: Operator) -> list[str]:
    extra = session.execute(
        select(OperatorAddress.address)
        .where(OperatorAddress.operator_id == operator.id)
        .order_by(OperatorAddress.address)
    ).scalars()
    return [operator.email, *extra]


def join_queue(session: Session, operator: Operator, queue: Queue) -> bool:
    found = session.execute(
        select(OperatorQueue.id).where(
            OperatorQueue.operator_id == operator.id, OperatorQueue.queue_id == queue.id
        )
    ).first()
    if found is not None:
        return False
    session.add(OperatorQueue(operator_id=operator.id, queue_id=queue.id))
    forget(session)
    return True


def leave_queue(session: Session, operator: Operator, queue: Queue) -> None:
    row = session.execute(
        select(OperatorQueue).where(
            OperatorQueue.operator_id == operator.id, OperatorQueue.queue_id == queue.id
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"{operator.email} is not in queue {queue.name}")
    session.delete(row)
    forget(session)


def queues_of(session: Session, operator: Operator) -> list[str]:
    return list(
        session.execute(
            select(Queue.name)
            .join(OperatorQueue, OperatorQueue.queue_id == Queue.id)
            .where(OperatorQueue.operator_id == operator.id)
            .order_by(Queue.name)
        ).scalars()
    )


def queue_members(session: Session, queue_id: int) -> Sequence[Operator]:
    """Active operators of a queue: who gets its unassigned tickets' mail."""
    return remembered(
        session,
        ("queue_members", queue_id),
        lambda: session.execute(_QUEUE_MEMBERS, {"queue_id": queue_id}).scalars().all(),
    )
