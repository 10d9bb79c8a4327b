"""Operators: the people who answer tickets."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailsupport.db.models import Operator
from mailsupport.errors import InvalidValueError, NotFoundError

_EMAIL_RE = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")


def add_operator(session: Session, email: str, name: str, now: datetime) -> Operator:
    email = email.strip().lower()
    if not _EMAIL_RE.match(email):
        raise InvalidValueError(f"Not an email address: {email}")
    if not name.strip():
        raise InvalidValueError("An operator needs a name (--name)")
    existing = session.execute(select(Operator).where(Operator.email == email)).scalar_one_or_none()
    if existing is not None:
        raise InvalidValueError(f"Operator already exists: {email}")
    operator = Operator(email=email, name=name.strip(), active=True, created_at=now)
    session.add(operator)
    session.flush()
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
    return frozenset(session.execute(select(Operator.email)).scalars())
