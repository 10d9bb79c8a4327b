"""Values looked up once per transaction: who the operators are, a queue's members.

The pipeline applies a batch of messages in one transaction, and every message asks the same
questions about rarely changing tables. An answer is kept in the session until the transaction
ends, so it never outlives the snapshot it was read from; code that changes those tables in
the same transaction calls ``forget``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

T = TypeVar("T")
_KEY = "mailsupport.memo"


def remembered(session: Session, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, or what it returned earlier in this transaction."""
    memo: dict[Hashable, Any] = session.info.setdefault(_KEY, {})
    if key not in memo:
        memo[key] = compute()
    value: T = memo[key]
    return value


def forget(session: Session) -> None:
    """Drop every remembered value: the tables behind them changed."""
    session.info.pop(_KEY, None)


# Keys of ``session.info`` that hold what belongs to one transaction and ends with it.
_TRANSACTION_KEYS = {_KEY}


def ends_with_transaction(key: str) -> None:
    """Have ``session.info[key]`` dropped whenever a session's transaction ends."""
    _TRANSACTION_KEYS.add(key)


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    # Every flush opens and ends a subtransaction of its own; only the outermost one counts.
    if transaction.parent is None:
        for key in _TRANSACTION_KEYS:
            session.info.pop(key, None)
