"""The inbox writer: durable storage of raw mail with group commit.

Every channel must not acknowledge a message before it is on disk, and a commit with full
sync costs a disk flush. Messages arriving together are therefore written in one transaction
by one thread, and each sender is answered once that commit returns: a flush per batch instead
of per message, with the same guarantee.

The writer shares the interpreter with the SMTP listener's event loop, so each batch is handed
back to that loop in one call rather than one wake-up per message: every cross-thread call
costs the loop a round trip for the interpreter lock, which under load showed as idle clients.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock
from mailsupport.db.inbox import RawMail, Stored, store_many
from mailsupport.errors import StorageError

log = logging.getLogger(__name__)

# Enough to amortise the flush under load without making any one sender wait long.
MAX_BATCH = 64

# Mail up to this size is hashed on the event loop that received it, in well under a
# millisecond; a larger one in a thread, so the loop goes on serving the other clients. One
# thread for all: the hashing holds the interpreter lock in turns with the loop, and each more
# thread hashing at once was one more the loop waited behind (four 9 MB mails: 160 ms).
HASH_ON_LOOP_LIMIT = 256 * 1024

_Outcome = Stored | StorageError


@dataclass
class _Request:
    mail: RawMail
    future: Future[Stored] | None = None  # for threads waiting on the result
    waiter: asyncio.Future[Stored] | None = None  # for coroutines, settled on their loop


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
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-hash")
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
            self._hasher.shutdown(wait=False)
            self._started = False

    def _enqueue(self, request: _Request) -> None:
        if not self._started:
            raise StorageError("the inbox writer is not running")
        # Hashed before it is queued, in the sender's thread: the writer holds the write lock
        # while storing.
        _ = request.mail.key
        self._queue.put(request)

    def submit(self, mail: RawMail) -> Future[Stored]:
        request = _Request(mail, future=Future())
        self._enqueue(request)
        assert request.future is not None
        return request.future

    async def store(self, mail: RawMail) -> Stored:
        loop = asyncio.get_running_loop()
        if len(mail.raw) > HASH_ON_LOOP_LIMIT and self._started:
            # Hashing 25 MB takes tens of milliseconds in which the loop would answer nobody.
            await loop.run_in_executor(self._hasher, _hash, mail)
        waiter: asyncio.Future[Stored] = loop.create_future()
        self._enqueue(_Request(mail, waiter=waiter))
        return await waiter

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = self._write(batch, stop=self._drain(batch))

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

    def _write(self, batch: list[_Request], stop: bool) -> bool:
        """Store and answer the batch; returns whether the stop request has been taken."""
        try:
            with self._factory.begin() as session:
                session.connection()  # takes the write lock
                # Mail that arrived while the writer waited for the lock shares the commit:
                # under load that halves the disk flushes the lock is held for.
                stop = stop or self._drain(batch)
                results = store_many(session, [r.mail for r in batch], self._clock.now())
        except Exception as exc:
            # Every sender is told 451 and retries later; the writer itself carries on.
            unexpected = not isinstance(exc, SQLAlchemyError)
            log.error("could not store %d message(s): %s", len(batch), exc, exc_info=unexpected)
            error = StorageError(f"cannot store the message: {type(exc).__name__}")
            _settle(batch, [error] * len(batch))
            return stop
        _settle(batch, results)
        if self._on_stored is not None:
            self._notify(results)
        return stop

    def _notify(self, results: Sequence[Stored]) -> None:
        assert self._on_stored is not None
        try:
            self._on_stored(results)
        except Exception:
            log.exception("new-mail notification failed; the backlog check will pick it up")


def _hash(mail: RawMail) -> None:
    _ = mail.key  # computed once, and kept on the mail


def _settle(batch: Sequence[_Request], outcomes: Sequence[_Outcome]) -> None:
    """Answer every request of a committed (or failed) batch: one call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Stored], _Outcome]]] = {}
    for request, outcome in zip(batch, outcomes, strict=True):
        if request.waiter is not None:
            by_loop.setdefault(request.waiter.get_loop(), []).append((request.waiter, outcome))
        elif request.future is not None:
            _set(request.future, outcome)
    for loop, waiters in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_waiters, waiters)
        except RuntimeError:
            # The loop is closed: its sessions are gone, and the mail is stored (or not) anyway.
            log.warning("%d sender(s) left before their mail was committed", len(waiters))


def _settle_waiters(waiters: Sequence[tuple[asyncio.Future[Stored], _Outcome]]) -> None:
    for waiter, outcome in waiters:
        if not waiter.done():  # a sender that went away cancelled its wait
            _set(waiter, outcome)


def _set(future: Future[Stored] | asyncio.Future[Stored], outcome: _Outcome) -> None:
    if isinstance(outcome, StorageError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
