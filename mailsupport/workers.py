"""The pipeline workers: separate processes (threads in tests) turning stored mail into tickets.

Each worker processes the backlog, then whatever new mail wakes it, and sweeps again at the poll
interval. The pool replaces a worker that dies (the OOM killer, a crash in a C extension, a
stray SIGKILL): the listener goes on answering 250 whatever happens to the workers, so mail
would otherwise pile up unprocessed with nothing but a daemon restart to save it. A worker on
one message for longer than ``[pipeline] message_timeout`` is killed the same way; the mail it
had in hand is counted against (pipeline/runner.py), so one that keeps killing its worker ends
up quarantined instead of stopping all processing.

Workers die with the daemon (lifeline.py). The kernel ties a worker to the thread that started
it, not to the process, so every worker is started by the pool's watcher thread, which ends only
once every worker has.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mailsupport.app import App, open_app
from mailsupport.clock import Clock
from mailsupport.config import Config
from mailsupport.db.inbox import Share
from mailsupport.db.inhand import Holder
from mailsupport.db.instance import Owner
from mailsupport.errors import StorageError
from mailsupport.lifeline import die_with_parent, limit_memory
from mailsupport.logs import setup_logging
from mailsupport.pipeline.runner import Pipeline

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0  # how often the pool looks for dead workers
FIRST_RESTART_DELAY = 1.0  # seconds; doubled for a worker that dies again soon after its start
MAX_RESTART_DELAY = 60.0
STABLE_AFTER = 60.0  # a worker alive this long has its restart delay reset
STOP_TIMEOUT = 60.0  # seconds a stopping worker has to finish its batch before it is killed


class Event(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class Wakeup:
    """A wake-up call to another process that the death of that process cannot jam.

    A multiprocessing Event's ``set`` waits for every process asleep in its ``wait`` to wake;
    one killed while asleep (the OOM killer, SIGKILL, a stop signal sent to the whole process
    group) made every later ``set`` hang, and with it the inbox writer that wakes the pipeline.
    A semaphore holding at most one pending wake-up waits for nobody. ``wait`` takes the
    wake-up it returns for.
    """

    def __init__(self, context: Any) -> None:
        self._pending = context.BoundedSemaphore(1)
        self._pending.acquire()  # none pending to begin with

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
class Signals:
    """Events shared with the workers (threading or multiprocessing ones)."""

    stop: Event
    wake: Event  # new mail is stored
    outbox: Event  # a worker queued outbound mail


class Since(Protocol):
    """Since when (``time.monotonic``) a worker has been on its message; 0.0 when on none.

    A double in shared memory for a worker process (the clock is the system's, the same in
    every process); a plain attribute for a thread.
    """

    value: float


class _SinceInThread:
    def __init__(self) -> None:
        self.value = 0.0


def _in_hand(since: Since | None) -> Callable[[bool], None]:
    def mark(busy: bool) -> None:
        if since is not None:
            since.value = time.monotonic() if busy else 0.0

    return mark


@dataclass(frozen=True)
class Place:
    """What a worker is told of its place in the pool."""

    share: Share
    holder: Holder | None = None  # who it takes mail in hand as
    since: Since | None = None  # where it tells its supervisor what it is on


def run_worker(
    config: Config,
    signals: Signals,
    share: Share | None = None,
    clock: Clock | None = None,
    place: Place | None = None,
) -> None:
    """A pipeline worker's life: process the backlog, then whatever new mail wakes it."""
    place = place or Place(share or Share())
    app = _open_worker_app(config, signals, clock)
    if app is None:
        return
    pipeline = Pipeline(
        app.factory, app.config, app.clock, holder=place.holder, in_hand=_in_hand(place.since)
    )
    log.info("pipeline worker %d of %d ready", place.share.index + 1, place.share.of)
    try:
        while not signals.stop.is_set():
            signals.wake.clear()
            try:
                if pipeline.process_pending(share=place.share):
                    signals.outbox.set()
            except Exception:
                log.exception("pipeline sweep failed; retrying after the poll interval")
            signals.wake.wait(config.pipeline.poll_interval)
    finally:
        _put_back(pipeline)
        app.close()


def _put_back(pipeline: Pipeline) -> None:
    try:
        pipeline.release_unfinished()
    except Exception:
        log.exception("pipeline worker could not put back the mail it did not finish")


def _open_worker_app(config: Config, signals: Signals, clock: Clock | None) -> App | None:
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


def _worker_process_main(config: Config, signals: Signals, place: Place, parent: int) -> None:
    # First of all: a worker whose daemon is gone must not start working for another.
    orphan = not die_with_parent(parent)
    setup_logging(logging.INFO)
    if orphan:
        log.warning("the daemon (pid %s) ended before this worker started: exiting", parent)
        return
    limit_memory(config.pipeline.worker_memory_limit)
    # A worker is stopped through its event; a Ctrl-C or a stop signal sent to the daemon's
    # whole process group (systemd does) must not kill it half-way through a message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Where the kernel cannot kill it with its parent (not Linux), it watches for itself.
    threading.Thread(target=_exit_with_parent, args=(parent, signals), daemon=True).start()
    run_worker(config, signals, place=place)


def _exit_with_parent(parent: int, signals: Signals) -> None:
    """Stop when the daemon is gone (killed outright), instead of working on as an orphan."""
    while not signals.stop.is_set():
        if os.getppid() != parent:
            log.warning("the daemon (pid %s) is gone: stopping this worker", parent)
            signals.stop.set()
            signals.wake.set()
            return
        time.sleep(1.0)


class Restarts:
    """When a dead worker may be started again: at once, then later and later if it keeps dying.

    A worker that dies right after its start (a database it cannot read, a broken install)
    would otherwise be restarted in a tight loop, each start costing a second of CPU.
    """

    def __init__(self) -> None:
        self._delay = 0.0
        self._started = 0.0
        self.due = 0.0  # monotonic time from which a start is allowed

    def started(self, now: float) -> None:
        self._started = now

    def died(self, now: float) -> float:
        """Record a death; returns the delay before the next start."""
        if now - self._started >= STABLE_AFTER:
            self._delay = 0.0
        self._delay = min(MAX_RESTART_DELAY, max(FIRST_RESTART_DELAY, 2 * self._delay))
        self.due = now + self._delay
        return self._delay


class _Slot:
    """One place in the pool: its share of the mail, its wake-up, and whoever fills it now."""

    def __init__(self, place: Place, signals: Signals) -> None:
        self.place = place
        self.share = place.share
        self.signals = signals
        self.worker: Any = None
        self.restarts = Restarts()
        self.dead_since: float | None = None


class WorkerPool:
    """Start, watch, wake and stop the pipeline workers."""

    def __init__(self, config: Config, clock: Clock, *, processes: bool = True) -> None:
        self.config = config
        self.clock = clock
        self._processes = processes
        self._context: Any = multiprocessing.get_context("spawn") if processes else threading
        # Nobody waits on stop, so a plain Event is safe there.
        self._stop: Event = self._context.Event()
        self.outbox: Event = Wakeup(self._context)  # set when a worker has queued mail
        self._slots: list[_Slot] = []
        self._stopping = threading.Event()  # no worker is started any more
        self._done = threading.Event()  # every worker has ended: the watcher may too
        self._launching = threading.Lock()  # a start and the stop never overlap
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._watcher: threading.Thread | None = None

    def start(self, owner: Owner | None = None) -> None:
        """Start the workers, taking mail in hand as ``owner``'s (a daemon's) when given."""
        count = self.config.pipeline.workers
        for number in range(count):
            signals = Signals(self._stop, Wakeup(self._context), self.outbox)
            holder = Holder(owner, number) if owner is not None else None
            since = self._new_since()
            self._slots.append(_Slot(Place(Share(number, count), holder, since), signals))
        if not self._slots:
            return
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        self._watcher.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def _new_since(self) -> Since:
        if self._processes:
            shared: Since = self._context.Value("d", 0.0, lock=False)
            return shared
        return _SinceInThread()

    def _launch(self, slot: _Slot) -> None:
        name = f"pipeline-{slot.share.index}"
        assert slot.place.since is not None
        slot.place.since.value = 0.0
        if self._processes:
            args: tuple[Any, ...] = (self.config, slot.signals, slot.place, os.getpid())
            slot.worker = self._context.Process(
                target=_worker_process_main, args=args, name=name, daemon=True
            )
        else:
            args = (self.config, slot.signals, slot.share, self.clock, slot.place)
            slot.worker = threading.Thread(target=run_worker, args=args, name=name, daemon=True)
        slot.worker.start()
        slot.restarts.started(time.monotonic())
        slot.dead_since = None

    def _watch(self) -> None:
        try:
            for slot in self._slots:
                self._launch(slot)
        except BaseException as exc:
            self._start_error = exc
            return
        finally:
            self._started.set()
        # Often enough that a short time limit is kept to within a quarter.
        interval = min(WATCH_SECONDS, self.config.pipeline.message_timeout / 4)
        while not self._done.wait(interval):
            for slot in self._slots:
                try:
                    self._check(slot, time.monotonic())
                except Exception:
                    log.exception("watching pipeline worker %d failed", slot.share.index + 1)

    def _check(self, slot: _Slot, now: float) -> None:
        if slot.worker.is_alive() and not self._over_time(slot, now):
            return
        if slot.dead_since is None:
            slot.dead_since = now
            delay = slot.restarts.died(now)
            code = getattr(slot.worker, "exitcode", None)
            log.error(
                "pipeline worker %d died%s; starting a new one in %.0f s",
                slot.share.index + 1,
                "" if code is None else f" (exit code {code})",
                delay,
            )
        with self._launching:
            if now >= slot.restarts.due and not self._stopping.is_set():
                self._launch(slot)
                slot.signals.wake.set()  # whatever was stored meanwhile

    def _over_time(self, slot: _Slot, now: float) -> bool:
        """Kill a worker process on one message past the time limit; True once it is dead."""
        since = slot.place.since.value if slot.place.since is not None else 0.0
        limit = self.config.pipeline.message_timeout
        if not since or now - since <= limit or not self._processes:
            return False  # a thread cannot be killed: the limit is for worker processes
        log.error(
            "pipeline worker %d has been on one message for over %g s "
            "(pipeline.message_timeout): killing it",
            slot.share.index + 1,
            limit,
        )
        slot.worker.kill()
        slot.worker.join(timeout=5)
        return not slot.worker.is_alive()

    def wake(self) -> None:
        for slot in self._slots:
            slot.signals.wake.set()

    def stop(self) -> None:
        """Let every worker finish its message and end; none is started again."""
        with self._launching:
            self._stopping.set()
        self._stop.set()
        self.wake()
        for slot in self._slots:
            if slot.worker is not None:
                slot.worker.join(timeout=STOP_TIMEOUT)
                self._kill_if_stuck(slot)
        # Only now: a worker outliving the thread that started it would be killed with it.
        self._done.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
            self._watcher = None
        self._slots.clear()

    def _kill_if_stuck(self, slot: _Slot) -> None:
        # A worker process still running would hold the daemon's exit for ever (multiprocessing
        # waits for its children). What it was doing is uncommitted and will be done again.
        if isinstance(slot.worker, multiprocessing.process.BaseProcess) and slot.worker.is_alive():
            log.error("pipeline worker %d did not stop: killing it", slot.share.index + 1)
            slot.worker.kill()
            slot.worker.join(timeout=5)

    def kill(self) -> None:
        """Kill the worker processes outright, as a crash would (for tests)."""
        for slot in self._slots:
            if isinstance(slot.worker, multiprocessing.process.BaseProcess):
                slot.worker.kill()
