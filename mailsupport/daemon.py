"""The daemon: listener, inbox writer and pipeline workers, started and stopped together.

The listener runs on an asyncio loop in its own thread; stored mail wakes the pipeline
workers, which are separate processes by default so that parsing does not compete with the
listener for one interpreter. Workers also sweep the backlog on start and at an interval, so
mail stored while the daemon was down (or by the gateway) is processed too. The scheduler
(APScheduler) runs the outbox sender at an interval, and at once when a worker has queued mail.
Each IMAP account has a poller thread that stores into the inbox and wakes the workers the
same way the listener's writer does.

A daemon is its ``[daemon] instance`` across restarts. It holds that instance's lock while it
runs, and on start frees at once what an earlier run of it held (stored mail in a worker's
hands, outbound mail being sent): that run is dead, and its leases are for other daemons.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import OperationalError

from mailsupport.app import App, open_app, prepare_queues
from mailsupport.clock import Clock, SystemClock
from mailsupport.config import Config
from mailsupport.db.engine import checkpoint, driver_message, is_busy, is_sqlite
from mailsupport.db.inbox import Stored
from mailsupport.db.inhand import release_previous
from mailsupport.db.instance import InstanceLock, Owner
from mailsupport.intake.imap import ImapIntake
from mailsupport.intake.smtp import Listener
from mailsupport.intake.writer import InboxWriter
from mailsupport.outbound.sender import OutboxSender, release_previous_claims
from mailsupport.workers import WorkerPool

log = logging.getLogger(__name__)

# How often the daemon copies SQLite's WAL back into the database file. No connection of the
# daemon does it on commit (SQLite's default every 1000 pages): that commit then waited for the
# copy and its fsync, and under load it was one of the listener's, holding up its 250s.
CHECKPOINT_SECONDS = 1.0


class _OneAtATime:
    """A job run by the scheduler and by wake-ups alike: one run at a time, none lost.

    Called while a run is going on (in another thread), it returns at once and the running one
    goes round again, so mail queued after that run's last claim is not left for the next
    interval. APScheduler alone skipped such a run, and warned about it.
    """

    def __init__(self, job: Callable[[], object]) -> None:
        self._job = job
        self._lock = threading.Lock()
        self._running = False
        self._asked = False

    def __call__(self) -> None:
        with self._lock:
            self._asked = True
            if self._running:
                return
            self._running = True
        try:
            while self._take_request():
                self._job()
        finally:
            with self._lock:
                self._running = False

    def _take_request(self) -> bool:
        with self._lock:
            asked, self._asked = self._asked, False
            return asked


class _WhileBusy:
    """The outbox sweep, for which a database locked by another process is no failure.

    Another process (a long CLI command, a backup, the gateway) may hold SQLite's write lock
    for longer than ``busy_timeout``: the sweep then sends nothing and the next one tries
    again. That is told once, when it starts, and once when a sweep gets through again.
    """

    def __init__(self, job: Callable[[], object]) -> None:
        self._job = job
        self._busy = False  # only ever changed by the one run _OneAtATime lets through

    def __call__(self) -> None:
        try:
            self._job()
        except OperationalError as exc:
            if not is_busy(exc):
                raise
            if not self._busy:
                self._busy = True
                log.warning(
                    "outbox: the database is locked by another connection (%s); "
                    "mail is sent once it is free",
                    driver_message(exc),
                )
            return
        if self._busy:
            self._busy = False
            log.info("outbox: the database is free again; sending goes on")


class Daemon:
    """Everything ``mailsupport serve`` runs, with explicit start and stop for tests."""

    def __init__(
        self, config: Config, *, clock: Clock | None = None, worker_processes: bool = True
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.app: App | None = None
        self._writer: InboxWriter | None = None
        self._imap: ImapIntake | None = None
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._workers = WorkerPool(config, self.clock, processes=worker_processes)
        self._stop = threading.Event()
        self._send_outbox: _OneAtATime | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._waker: threading.Thread | None = None
        self._lock: InstanceLock | None = None
        self.owner: Owner | None = None
        self.smtp_address: tuple[str, int] | None = None

    def start(self) -> None:
        """Start everything; on failure, stop what had started and raise what went wrong."""
        try:
            self._start_all()
        except BaseException:
            # Worker processes and threads started before the failure would otherwise run on,
            # and a worker process keeps the interpreter from exiting.
            self._stop_quietly()
            raise

    def _stop_quietly(self) -> None:
        try:
            self.stop()
        except Exception:
            # What made the start fail is the news; a failing clean-up must not hide it.
            log.exception("stopping after a failed start failed too")

    def _start_all(self) -> None:
        self.app = open_app(self.config, clock=self.clock, migrate=True, auto_checkpoint=False)
        prepare_queues(self.app)
        self._take_over()
        self._workers.start(self.owner)
        self._writer = InboxWriter(self.app.factory, self.clock, on_stored=self._on_stored)
        self._writer.start()
        if self.config.imap:
            self._imap = ImapIntake(self.app.factory, self.config, self.clock, self._on_stored)
            self._imap.start()
        self._start_scheduler()
        if self.config.smtp.enabled:
            self._start_listener()

    def _take_over(self) -> None:
        """Become this instance: its lock, then what earlier runs of it left held."""
        assert self.app is not None
        self._lock = InstanceLock(self.app.engine, self.config.instance)
        self._lock.acquire()
        self.owner = Owner(self.config.instance, self.clock.now())
        with self.app.factory.begin() as session:
            stored = release_previous(session, self.owner)
            outbound = release_previous_claims(session, self.owner, self.clock.now())
        if stored or outbound:
            log.info(
                "took back what the previous run of %s held: %d stored, %d outbound message(s)",
                self.owner.instance,
                stored,
                outbound,
            )

    def _start_scheduler(self) -> None:
        assert self.app is not None
        sender = OutboxSender(self.app.factory, self.config, self.clock, owner=self.owner)
        self._send_outbox = _OneAtATime(_WhileBusy(sender.send_due))
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_job(
            self._send_outbox,
            "interval",
            id="outbox",
            name="outbox sender",
            seconds=self.config.outbound.send_interval,
            next_run_time=datetime.now(UTC),
            # _OneAtATime lets one run through; a call during it returns at once. With
            # APScheduler's limit at 1, a run longer than the interval (a relay or a lock
            # that is slow to answer) had the next one skipped with a warning instead.
            max_instances=2,
            coalesce=True,
        )
        if is_sqlite(self.app.engine):
            # The only checkpoints while the daemon runs: without them the WAL grows for ever.
            self._scheduler.add_job(
                checkpoint,
                "interval",
                args=(self.app.engine,),
                id="wal-checkpoint",
                name="WAL checkpoint",
                seconds=CHECKPOINT_SECONDS,
                max_instances=1,
                coalesce=True,
            )
        self._scheduler.start()
        self._waker = threading.Thread(target=self._wake_outbox, name="outbox-waker", daemon=True)
        self._waker.start()

    def _wake_outbox(self) -> None:
        """Send at once whenever a worker has queued mail, without waiting for the interval."""
        while not self._stop.is_set():
            if self._workers.outbox.wait(1.0) and self._send_outbox is not None:
                try:
                    self._send_outbox()
                except Exception:
                    log.exception("outbox sweep failed; retrying at the next interval")

    def _start_listener(self) -> None:
        assert self._writer is not None
        self._loop = asyncio.new_event_loop()
        self._listener = Listener(self.config, self._writer)
        self._loop_thread = threading.Thread(target=self._run_loop, name="smtp", daemon=True)
        self._loop_thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listener.start(), self._loop)
        self.smtp_address = future.result(timeout=30)

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _on_stored(self, results: Sequence[Stored]) -> None:
        if any(not r.duplicate for r in results):
            self.wake_pipeline()

    def wake_pipeline(self) -> None:
        self._workers.wake()

    def stop(self) -> None:
        """Stop accepting, finish what is being stored, then let the workers finish."""
        if self._listener is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._listener.stop(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=30)
            self._loop.close()
            self._listener = None
        if self._imap is not None:
            self._imap.stop()
            self._imap = None
        if self._writer is not None:
            self._writer.stop()
        self._stop.set()
        self._workers.stop()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._waker is not None:
            self._waker.join()  # it may be sending, as a scheduler job may: let it finish
        if self._lock is not None:
            self._lock.release()  # only now: nothing of this run is working any more
            self._lock = None
        if self.app is not None:
            self.app.close()

    def kill_workers(self) -> None:
        """Terminate worker processes abruptly, as a crash would (for tests)."""
        self._workers.kill()

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT."""
        done = threading.Event()

        def _request_stop(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, _request_stop)
        signal.signal(signal.SIGINT, _request_stop)
        self.start()
        log.info("mailsupport is running (config: %s)", self.config.source)
        done.wait()
        self.stop()
