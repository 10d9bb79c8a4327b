"""The daemon: listener, inbox writer and pipeline workers, started and stopped together.

The listener runs on an asyncio loop in its own thread; stored mail wakes the pipeline
workers, which are separate processes by default so that parsing does not compete with the
listener for one interpreter. Workers also sweep the backlog on start and at an interval, so
mail stored while the daemon was down (or by the gateway) is processed too. The scheduler
(APScheduler) runs the outbox sender at an interval, and at once when a worker has queued mail.
Each IMAP account has a poller thread that stores into the inbox and wakes the workers the
same way the listener's writer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from mailsupport.app import App, open_app
from mailsupport.clock import Clock, SystemClock
from mailsupport.config import Config
from mailsupport.db.engine import checkpoint, is_sqlite
from mailsupport.db.inbox import Share, Stored
from mailsupport.errors import StorageError
from mailsupport.intake.imap import ImapIntake
from mailsupport.intake.smtp import Listener
from mailsupport.intake.writer import InboxWriter
from mailsupport.logs import setup_logging
from mailsupport.outbound.sender import OutboxSender
from mailsupport.pipeline.runner import Pipeline

log = logging.getLogger(__name__)

# How often the daemon copies SQLite's WAL back into the database file. No connection of the
# daemon does it on commit (SQLite's default every 1000 pages): that commit then waited for the
# copy and its fsync, and under load it was one of the listener's, holding up its 250s.
CHECKPOINT_SECONDS = 1.0


class _Event(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class _Wakeup:
    """A wake-up call to another process that the death of that process cannot jam.

    A multiprocessing Event's ``set`` waits for every process asleep in its ``wait`` to wake;
    one killed while asleep (the OOM killer, SIGKILL, a stop signal sent to the whole process
    group) made every later ``set`` hang, and with it the inbox writer that wakes the pipeline.
    A semaphore holding at most one pending wake-up waits for nobody. ``wait`` takes the
    wake-up it returns for.
    """

    def __init__(self, context: Any) -> None:
        self._pending = context.BoundedSemaphore(1)

    def set(self) -> None:
        with contextlib.suppress(ValueError):  # one is pending already
            self._pending.release()

    def clear(self) -> None:
        self._pending.acquire(False)

    def is_set(self) -> bool:
        if not self._pending.acquire(False):
            return False
        self.set()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._pending.acquire(True, timeout))


@dataclass
class _Signals:
    """Events shared with the workers (threading or multiprocessing ones)."""

    stop: _Event
    wake: _Event  # new mail is stored
    outbox: _Event  # a worker queued outbound mail


def run_worker(
    config: Config, signals: _Signals, share: Share | None = None, clock: Clock | None = None
) -> None:
    """A pipeline worker's life: process the backlog, then whatever new mail wakes it."""
    app = _open_worker_app(config, signals, clock)
    if app is None:
        return
    pipeline = Pipeline(app.factory, app.config, app.clock)
    place = share or Share()
    log.info("pipeline worker %d of %d ready", place.index + 1, place.of)
    try:
        while not signals.stop.is_set():
            signals.wake.clear()
            try:
                if pipeline.process_pending(share=share):
                    signals.outbox.set()
            except Exception:
                log.exception("pipeline sweep failed; retrying after the poll interval")
            signals.wake.wait(config.pipeline.poll_interval)
    finally:
        app.close()


def _open_worker_app(config: Config, signals: _Signals, clock: Clock | None) -> App | None:
    """The worker's database, once it can be opened; None when told to stop first.

    A database locked or unreachable at start is a passing state, as it is while processing:
    the worker waits for it instead of ending and leaving the stored mail unprocessed.
    """
    while not signals.stop.is_set():
        try:
            # A processed message whose commit a power cut undoes is simply processed again,
            # outbox rows included (they share the transaction); only storing mail must be
            # flushed each time. Checkpoints are left to the daemon's connections and its job.
            return open_app(
                config, clock=clock, migrate=False, flush_each_commit=False, auto_checkpoint=False
            )
        except StorageError as exc:
            log.warning("pipeline worker cannot open the database yet: %s", exc)
            signals.wake.wait(config.pipeline.poll_interval)
    return None


def _worker_process_main(config: Config, signals: _Signals, share: Share) -> None:
    # A worker is stopped through its event; a Ctrl-C or a stop signal sent to the daemon's
    # whole process group (systemd does) must not kill it half-way through a message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(logging.INFO)
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent, signals), daemon=True).start()
    run_worker(config, signals, share)


def _exit_with_parent(parent: int, signals: _Signals) -> None:
    """Stop when the daemon is gone (killed outright), instead of working on as an orphan."""
    while not signals.stop.is_set():
        if os.getppid() != parent:
            log.warning("the daemon (pid %s) is gone: stopping this worker", parent)
            signals.stop.set()
            signals.wake.set()
            return
        time.sleep(1.0)


class Daemon:
    """Everything ``mailsupport serve`` runs, with explicit start and stop for tests."""

    def __init__(
        self, config: Config, *, clock: Clock | None = None, worker_processes: bool = True
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._processes = worker_processes
        self.app: App | None = None
        self._writer: InboxWriter | None = None
        self._imap: ImapIntake | None = None
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._workers: list[Any] = []
        self._signals: list[_Signals] = []
        self._stop: _Event = threading.Event()
        self._outbox_wake: _Event = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self._waker: threading.Thread | None = None
        self.smtp_address: tuple[str, int] | None = None

    def start(self) -> None:
        self.app = open_app(self.config, clock=self.clock, migrate=True, auto_checkpoint=False)
        self._start_workers()
        self._writer = InboxWriter(self.app.factory, self.clock, on_stored=self._on_stored)
        self._writer.start()
        if self.config.imap:
            self._imap = ImapIntake(self.app.factory, self.config, self.clock, self._on_stored)
            self._imap.start()
        self._start_scheduler()
        if self.config.smtp.enabled:
            self._start_listener()

    def _start_workers(self) -> None:
        context: Any = multiprocessing.get_context("spawn") if self._processes else threading
        # Nobody waits on stop, so a plain Event is safe there.
        self._stop, self._outbox_wake = context.Event(), _Wakeup(context)
        workers = self.config.pipeline.workers
        for number in range(workers):
            signals = _Signals(self._stop, _Wakeup(context), self._outbox_wake)
            share = Share(number, workers)
            if self._processes:
                worker: Any = context.Process(
                    target=_worker_process_main,
                    args=(self.config, signals, share),
                    name=f"pipeline-{number}",
                    daemon=True,
                )
            else:
                worker = threading.Thread(
                    target=run_worker,
                    args=(self.config, signals, share, self.clock),
                    name=f"pipeline-{number}",
                    daemon=True,
                )
            worker.start()
            self._workers.append(worker)
            self._signals.append(signals)

    def _start_scheduler(self) -> None:
        assert self.app is not None
        sender = OutboxSender(self.app.factory, self.config, self.clock)
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_job(
            sender.send_due,
            "interval",
            id="outbox",
            seconds=self.config.outbound.send_interval,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
        )
        if is_sqlite(self.app.engine):
            # The only checkpoints while the daemon runs: without them the WAL grows for ever.
            self._scheduler.add_job(
                checkpoint,
                "interval",
                args=(self.app.engine,),
                id="wal-checkpoint",
                seconds=CHECKPOINT_SECONDS,
                max_instances=1,
                coalesce=True,
            )
        self._scheduler.start()
        self._waker = threading.Thread(target=self._wake_outbox, name="outbox-waker", daemon=True)
        self._waker.start()

    def _wake_outbox(self) -> None:
        """Run the outbox job now whenever a worker has queued mail."""
        while not self._stop.is_set():
            if self._outbox_wake.wait(1.0) and self._scheduler is not None:
                self._outbox_wake.clear()
                self.send_outbox_now()

    def send_outbox_now(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.modify_job("outbox", next_run_time=datetime.now(UTC))

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
        for signals in self._signals:
            signals.wake.set()

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
        self.wake_pipeline()
        for worker in self._workers:
            worker.join(timeout=60)
        self._workers.clear()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._waker is not None:
            self._waker.join(timeout=5)
        if self.app is not None:
            self.app.close()

    def kill_workers(self) -> None:
        """Terminate worker processes abruptly, as a crash would (for tests)."""
        for worker in self._workers:
            if isinstance(worker, multiprocessing.process.BaseProcess):
                worker.kill()

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
