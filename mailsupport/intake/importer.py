"""Import existing mail from an mbox file or a Maildir, idempotently.

Each message goes through the same dedupe as live mail, so importing the same source twice
(or mail that also arrived by SMTP) stores nothing twice.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock
from mailsupport.db.inbox import RawMail, store_many
from mailsupport.errors import InvalidValueError

BATCH = 50


@dataclass
class ImportStats:
    seen: int = 0
    stored: int = 0
    duplicates: int = 0


def open_mailbox(kind: str, path: Path) -> mailbox.Mailbox[mailbox.Message]:
    if kind == "mbox":
        if not path.is_file():
            raise InvalidValueError(f"Not an mbox file: {path}")
        return mailbox.mbox(path, create=False)
    if kind == "maildir":
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise InvalidValueError(f"Not a Maildir (no cur/ or new/): {path}")
        return mailbox.Maildir(path, factory=None, create=False)
    raise InvalidValueError(f"Unknown mailbox kind: {kind}")


def iter_raw(box: mailbox.Mailbox[mailbox.Message]) -> Iterator[bytes]:
    for key in box.iterkeys():
        yield box.get_bytes(key)


def import_messages(
    factory: sessionmaker[Session], clock: Clock, messages: Iterator[bytes], stats: ImportStats
) -> Iterator[int]:
    """Store messages in batches; yields the number handled after each batch (for progress)."""
    batch: list[RawMail] = []
    for raw in messages:
        batch.append(RawMail(raw=raw, channel="import"))
        if len(batch) >= BATCH:
            yield _flush(factory, clock, batch, stats)
    if batch:
        yield _flush(factory, clock, batch, stats)


def _flush(
    factory: sessionmaker[Session], clock: Clock, batch: list[RawMail], stats: ImportStats
) -> int:
    with factory.begin() as session:
        results = store_many(session, batch, clock.now())
    count = len(batch)
    stats.seen += count
    stats.duplicates += sum(r.duplicate for r in results)
    stats.stored += sum(not r.duplicate for r in results)
    batch.clear()
    return count
