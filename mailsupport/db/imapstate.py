"""IMAP checkpoints: how far each account's folder is taken in, and how its poller fares.

The checkpoint advances in the transaction that stores the mail below it. A message at or
below it is therefore stored, whatever happened to the connection or the process afterwards,
and is never fetched again while the folder keeps its UIDVALIDITY.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsupport.db.inbox import RawMail, Stored, store_many
from mailsupport.db.models import ImapCheckpoint

log = logging.getLogger(__name__)

# UIDVALIDITY is a non-zero number (RFC 3501), so 0 marks a folder never selected yet.
UNKNOWN_UIDVALIDITY = 0
_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class FolderKey:
    account: str
    folder: str


def _row(session: Session, key: FolderKey, now: datetime) -> ImapCheckpoint:
    row = session.get(ImapCheckpoint, (key.account, key.folder), with_for_update=True)
    if row is None:
        row = ImapCheckpoint(
            account=key.account,
            folder=key.folder,
            uidvalidity=UNKNOWN_UIDVALIDITY,
            last_uid=0,
            connected=False,
            backlog=0,
            updated_at=now,
        )
        session.add(row)
    return row


def open_checkpoint(session: Session, key: FolderKey, uidvalidity: int, now: datetime) -> int:
    """The last UID stored from the folder under ``uidvalidity``; 0 when none was.

    A new UIDVALIDITY means the server renumbered the folder: every message in it is looked at
    again, and the inbox's content dedupe drops those already stored.
    """
    row = _row(session, key, now)
    if row.uidvalidity != uidvalidity:
        if row.uidvalidity != UNKNOWN_UIDVALIDITY:
            log.warning(
                "imap %s: %s changed UIDVALIDITY from %s to %s; rescanning it",
                key.account,
                key.folder,
                row.uidvalidity,
                uidvalidity,
            )
        row.uidvalidity, row.last_uid = uidvalidity, 0
    row.connected, row.updated_at = True, now
    return row.last_uid


def store_batch(
    session: Session,
    key: FolderKey,
    mails: Sequence[RawMail],
    *,
    last_uid: int,
    backlog: int,
    now: datetime,
) -> list[Stored]:
    """Store the mails and advance the checkpoint to ``last_uid``, in the caller's transaction."""
    results = store_many(session, mails, now)
    row = _row(session, key, now)
    row.last_uid = max(row.last_uid, last_uid)
    row.backlog, row.connected, row.updated_at = backlog, True, now
    return results


def record_success(session: Session, key: FolderKey, now: datetime) -> None:
    """The folder was checked and everything in it is taken in."""
    row = _row(session, key, now)
    row.connected, row.backlog, row.updated_at = True, 0, now
    row.last_success_at = now


def record_failure(session: Session, key: FolderKey, error: str, now: datetime) -> None:
    row = _row(session, key, now)
    row.connected, row.updated_at = False, now
    row.last_error, row.last_error_at = error[:_ERROR_LENGTH], now


def record_disconnected(session: Session, key: FolderKey, now: datetime) -> None:
    row = _row(session, key, now)
    row.connected, row.updated_at = False, now


def checkpoints(session: Session) -> dict[FolderKey, ImapCheckpoint]:
    rows = session.execute(select(ImapCheckpoint)).scalars()
    return {FolderKey(r.account, r.folder): r for r in rows}
