"""The daemon: listener, inbox writer and pipeline workers, started and stopped together.

The listener runs on an asyncio loop in its own thread; stored mail wakes the pipeline
workers, which are separate processes by default so that parsing does not compete with the
listener for one interpreter. Workers also sweep the backlog on start and at an interval, so
mail stored while the daemon was down (or by the gateway) is processed too.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from mailsupport.app import App, open_app
from mailsupport.clock import Clock, SystemClock
from mailsupport.config import Config
from mailsupport.db.inbox import Stored
from mailsupport.intake.smtp import Listener
from mailsupport.intake.writer import InboxWriter
from mailsupport.logs import setup_logging
from mailsupport.pipeline.runner import Pipeline

log = logging.getLogger(__name__)


class _Event(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def run_worker(config: Config, stop: _Event, wake: _Event, clock: Clock | None = None) -> None:
    """A pipeline worker's life: process the backlog, then whatever new mail wakes it."""
    app = open_app(config, clock=clock, migrate=False)
    pipeline = Pipeline(app.factory, app.config, app.clock)
    try:
        while not stop.is_set():
            wake.clear()
            try:
                pipeline.process_pending()
            except Exception:
                log.exception("pipeline sweep failed; retrying after the poll interval")
            wake.wait(config.pipeline.poll_interval)
    finally:
        app.close()


def _worker_process_main(config: Config, stop: _Event, wake: _Event) -> None:
    # A worker is stopped through its event; a Ctrl-C meant for the daemon must not kill it
    # half-way through a message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(logging.INFO)
    run_worker(config, stop, wake)


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
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._workers: list[Any] = []
        self._wake: list[_Event] = []
        self._stop: _Event = threading.Event()
        self.smtp_address: tuple[str, int] | None = None

    def start(self) -> None:
        self.app = open_app(self.config, clock=self.clock, migrate=True)
        self._start_workers()
        self._writer = InboxWriter(self.app.factory, self.clock, on_stored=self._on_stored)
        self._writer.start()
        if self.config.smtp.enabled:
            self._start_listener()

    def _start_workers(self) -> None:
        if self._processes:
            context = multiprocessing.get_context("spawn")
            self._stop = context.Event()
            for number in range(self.config.pipeline.workers):
                wake = context.Event()
                process = context.Process(
                    target=_worker_process_main,
                    args=(self.config, self._stop, wake),
                    name=f"pipeline-{number}",
                    daemon=True,
                )
                process.start()
                self._workers.append(process)
                self._wake.append(wake)
            return
        self._stop = threading.Event()
        for number in range(self.config.pipeline.workers):
            wake_event = threading.Event()
            thread = threading.Thread(
                target=run_worker,
                args=(self.config, self._stop, wake_event, self.clock),
                name=f"pipeline-{number}",
                daemon=True,
            )
            thread.start()
            self._workers.append(thread)
            self._wake.append(wake_event)

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
        for wake in self._wake:
            wake.set()

    def stop(self) -> None:
        """Stop accepting, finish what is being stored, then let the workers finish."""
        if self._listener is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._listener.stop(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=30)
            self._loop.close()
            self._listener = None
        if self._writer is not None:
            self._writer.stop()
        self._stop.set()
        self.wake_pipeline()
        for worker in self._workers:
            worker.join(timeout=60)
        self._workers.clear()
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
