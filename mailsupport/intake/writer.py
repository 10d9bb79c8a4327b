"""The inbox writer: durable storage of raw mail with group commit.

Every channel must not acknowledge a message before it is on disk, and a commit with full
sync costs a disk flush. Messages arriving together are therefore written in one transaction
by one thread, and each sender is answered once that commit returns: a flush per batch instead
of per message, with the same guarantee.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock
from mailsupport.db.inbox import RawMail, Stored, store_many
from mailsupport.errors import StorageError

log = logging.getLogger(__name__)

# Enough to amortise the flush under load without making any one sender wait long.
MAX_BATCH = 64


@dataclass
class _Request:
    mail: RawMail
    future: Future[Stored]


class InboxWriter:
    """A thread that stores raw mail in batches; ``store`` answers once it is committed."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        clock: Clock,
        on_stored: Callable[[Sequence[Stored]], None] | None = None,
    ) -> None:
        self._factory = factory
        self._clock = clock
        self._on_stored = on_stored
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._started:
            self._queue.put(None)
            self._thread.join()
            self._started = False

    def submit(self, mail: RawMail) -> Future[Stored]:
        if not self._started:
            raise StorageError("the inbox writer is not running")
        request = _Request(mail, Future())
        self._queue.put(request)
        return request.future

    def store_blocking(self, mail: RawMail, timeout: float | None = None) -> Stored:
        return self.submit(mail).result(timeout)

    async def store(self, mail: RawMail) -> Stored:
        return await asyncio.wrap_future(self.submit(mail))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = self._drain(batch)
            self._write(batch)
            if stop:
                return

    def _drain(self, batch: list[_Request]) -> bool:
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _write(self, batch: list[_Request]) -> None:
        try:
            with self._factory.begin() as session:
                results = store_many(session, [r.mail for r in batch], self._clock.now())
        except SQLAlchemyError as exc:
            log.error("could not store %d message(s): %s", len(batch), exc)
            error = StorageError(f"cannot store the message: {type(exc).__name__}")
            for request in batch:
                request.future.set_exception(error)
            return
        for request, result in zip(batch, results, strict=True):
            request.future.set_result(result)
        if self._on_stored is not None:
            self._notify(results)

    def _notify(self, results: Sequence[Stored]) -> None:
        assert self._on_stored is not None
        try:
            self._on_stored(results)
        except Exception:
            log.exception("new-mail notification failed; the backlog check will pick it up")
