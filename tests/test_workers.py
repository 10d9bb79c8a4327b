"""Several pipeline workers: each its own share of the backlog, and nothing left behind."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailsupport.app import App, open_app
from mailsupport.clock import FrozenClock
from mailsupport.config import Config, build_config
from mailsupport.db.engine import checkpoint, read_session
from mailsupport.db.inbox import RawMail, Share, store_many
from mailsupport.db.models import Inbound, InboundState
from mailsupport.pipeline.runner import ORPHANED_AFTER, Pipeline
from mailsupport.workers import Restarts, Signals, run_worker

from _fixtures import config_data
from support import make_mail, wait_for

COUNT = 6


def _store(app: App, count: int = COUNT) -> list[int]:
    mails = [
        RawMail(make_mail(sender=f"c{i}@customer.test", subject=f"Problem {i}"), "smtp")
        for i in range(count)
    ]
    with app.factory.begin() as session:
        return [s.inbound_id for s in store_many(session, mails, app.clock.now())]


def _pending(app: App) -> set[int]:
    with read_session(app.factory) as session:
        statement = select(Inbound.id).where(Inbound.state == InboundState.PENDING)
        return set(session.execute(statement).scalars())


def test_each_worker_takes_only_its_share_while_the_others_are_fresh(app: App) -> None:
    ids = _store(app)
    pipeline = Pipeline(app.factory, app.config, app.clock)

    assert pipeline.process_pending(share=Share(0, 2)) == len([i for i in ids if i % 2 == 0])

    assert _pending(app) == {i for i in ids if i % 2 == 1}
    assert pipeline.process_pending(share=Share(1, 2)) == COUNT // 2
    assert _pending(app) == set()


def test_a_worker_with_nothing_left_takes_what_another_left_behind(
    app: App, clock: FrozenClock
) -> None:
    ids = _store(app)
    pipeline = Pipeline(app.factory, app.config, app.clock)
    pipeline.process_pending(share=Share(0, 3))
    assert _pending(app) == {i for i in ids if i % 3 != 0}

    # The workers owning the rest are stuck or gone: after a while, any worker takes over.
    clock.advance(ORPHANED_AFTER + timedelta(seconds=1))
    assert pipeline.process_pending(share=Share(0, 3)) == len([i for i in ids if i % 3 != 0])
    assert _pending(app) == set()


def test_the_limit_is_kept_within_one_batch(app: App) -> None:
    _store(app)
    pipeline = Pipeline(app.factory, app.config, app.clock)

    assert pipeline.process_pending(limit=2) == 2
    assert len(_pending(app)) == COUNT - 2


def test_workers_leave_checkpoints_to_the_daemon(config: Config, clock: FrozenClock) -> None:
    if not config.database.url.startswith("sqlite"):
        pytest.skip("WAL checkpoints are SQLite's")
    writer = open_app(config, clock=clock, migrate=True)
    worker = open_app(config, clock=clock, flush_each_commit=False, auto_checkpoint=False)
    try:
        with worker.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        with writer.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
        database = Path(config.database.url.removeprefix("sqlite:///"))
        _store(worker)
        Pipeline(worker.factory, worker.config, worker.clock).process_pending()
        before = database.stat().st_size

        checkpoint(writer.engine)

        # The worker's commits were only in the WAL; now they are in the database file.
        assert database.stat().st_size > before
    finally:
        worker.close()
        writer.close()


def test_a_worker_waits_for_a_database_locked_when_it_starts(
    tmp_path: Path, sqlite_url: str
) -> None:
    data = config_data(sqlite_url, database={"busy_timeout": 0.1}, pipeline={"poll_interval": 0.1})
    config = build_config(data, env={})
    app = open_app(config, migrate=True)
    signals = Signals(threading.Event(), threading.Event(), threading.Event())
    try:
        _store(app, 1)
        blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        worker = threading.Thread(target=run_worker, args=(config, signals), daemon=True)
        worker.start()
        time.sleep(0.5)  # several attempts to open the database fail meanwhile
        blocker.execute("ROLLBACK")
        blocker.close()
        signals.wake.set()
        wait_for(lambda: not _pending(app))
        assert worker.is_alive()
    finally:
        signals.stop.set()
        signals.wake.set()
        app.close()


def test_a_worker_that_keeps_dying_is_restarted_later_and_later() -> None:
    restarts = Restarts()
    restarts.started(100.0)
    delays = []
    now = 100.0
    for _ in range(8):
        now += 0.5  # dies half a second after each start
        delays.append(restarts.died(now))
        now = restarts.due
        restarts.started(now)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    # A worker that ran a good while before it died gets the first, short delay again.
    assert restarts.died(now + 3600) == 1.0
