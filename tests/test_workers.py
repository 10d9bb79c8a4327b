"""Several pipeline workers: each its own share of the backlog, and nothing left behind."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from mailsupport.app import App, open_app
from mailsupport.clock import FrozenClock
from mailsupport.config import Config, build_config
from mailsupport.daemon import Daemon
from mailsupport.db.engine import checkpoint, read_session
from mailsupport.db.inbox import RawMail, Share, store_many
from mailsupport.db.inhand import Holder, release_previous, take
from mailsupport.db.instance import Owner
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


# --- mail in a worker's hands -------------------------------------------------------------


def _holder(instance: str, started: datetime, slot: int = 0) -> Holder:
    return Holder(Owner(instance, started), slot)


def _inbound(app: App, inbound_id: int) -> Inbound:
    with app.factory() as session:
        return session.get_one(Inbound, inbound_id)


def _take(app: App, ids: list[int], holder: Holder, lease: timedelta) -> dict[int, int]:
    with app.factory.begin() as session:
        return take(session, ids, holder, app.clock.now(), lease)


def test_a_restarted_daemon_takes_back_at_once_what_its_previous_run_held(
    app: App, clock: FrozenClock
) -> None:
    [held] = _store(app, 1)
    before = _holder("host:/etc/mailsupport.toml", clock.now() - timedelta(minutes=5))
    assert _take(app, [held], before, timedelta(hours=1)) == {held: 0}  # then killed

    # Another daemon leaves it alone for the lease; so would this one without its release.
    stranger = Pipeline(app.factory, app.config, clock, holder=_holder("other:/x", clock.now()))
    again = _holder(before.owner.instance, clock.now())
    restarted = Pipeline(app.factory, app.config, clock, holder=again)
    assert stranger.process_pending() == 0
    assert restarted.process_pending() == 0

    with app.factory.begin() as session:
        assert release_previous(session, again.owner) == 1
    assert restarted.process_pending() == 1
    row = _inbound(app, held)
    assert row.state == InboundState.PROCESSED
    assert row.takes == 2  # the previous run's worker died with it in hand once


def test_mail_held_by_another_daemon_is_taken_once_its_lease_has_run_out(
    app: App, clock: FrozenClock
) -> None:
    [held] = _store(app, 1)
    _take(app, [held], _holder("gone:/x", clock.now()), timedelta(minutes=3))
    pipeline = Pipeline(app.factory, app.config, clock, holder=_holder("here:/y", clock.now()))
    assert pipeline.process_pending() == 0
    clock.advance(timedelta(minutes=3, seconds=1))
    assert pipeline.process_pending() == 1
    assert _inbound(app, held).state == InboundState.PROCESSED


def test_mail_put_back_after_a_database_error_is_not_counted_as_a_death(
    app: App, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    [inbound_id] = _store(app, 1)
    pipeline = Pipeline(app.factory, app.config, clock, holder=_holder("here:/y", clock.now()))
    real_apply = Pipeline._apply_batch

    def locked(self: Pipeline, batch: Any) -> Any:
        raise OperationalError("INSERT", None, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(Pipeline, "_apply_batch", locked)
    for _ in range(app.config.pipeline.deaths_before_quarantine + 1):
        assert pipeline.process_pending() == 0
    row = _inbound(app, inbound_id)
    assert (row.state, row.takes, row.taken_by) == (InboundState.PENDING, 0, None)

    monkeypatch.setattr(Pipeline, "_apply_batch", real_apply)
    assert pipeline.process_pending() == 1
    assert _inbound(app, inbound_id).state == InboundState.PROCESSED


def _slow_mail(lines: int) -> bytes:
    """A mail with an attached text of many short lines: parsing it takes seconds (about 0.3 s
    a million lines) and memory (about 80 MB a million lines). The text is a second part: the
    lone body of a one-part mail is set aside whole, cheaply, however many lines it has."""
    return (
        "From: poison@customer.test\r\nTo: support@example.com\r\nSubject: Log output\r\n"
        "Message-ID: <poison@customer.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe log is attached.\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\n" + "x\r\n" * lines + "--b--\r\n"
    ).encode()


def _states(app: App, ids: list[int]) -> list[tuple[str, str | None]]:
    columns = select(Inbound.id, Inbound.state, Inbound.quarantine_reason)
    with read_session(app.factory) as session:
        rows = {r.id: r for r in session.execute(columns.where(Inbound.id.in_(ids)))}
    return [(rows[i].state, rows[i].quarantine_reason) for i in ids]


def _poison_then_five(
    sqlite_url: str, pipeline: dict[str, Any], lines: int
) -> list[tuple[str, str | None]]:
    """Store a poison mail of ``lines`` short lines and five ordinary ones behind it, run a
    daemon with real worker processes until none is pending, and return their states."""
    data = config_data(sqlite_url, pipeline={"poll_interval": 0.5, **pipeline})
    config = build_config(data, env={})
    app = open_app(config, migrate=True)
    raws = [_slow_mail(lines)]
    raws += [make_mail(sender=f"c{i}@customer.test", subject=f"Problem {i}") for i in range(5)]
    with app.factory.begin() as session:
        stored = store_many(session, [RawMail(raw, "smtp") for raw in raws], app.clock.now())
    ids = [s.inbound_id for s in stored]
    daemon = Daemon(config)
    daemon.start()
    try:
        wait_for(lambda: InboundState.PENDING not in {s for s, _ in _states(app, ids)}, 240)
    finally:
        daemon.stop()
        states = _states(app, ids)
        app.close()
    return states


def test_a_mail_that_kills_its_worker_is_quarantined_and_the_mail_behind_it_processed(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed by the time limit each time it is tried; the ordinary mail behind it goes on."""
    # Killed within 1.25 seconds of each start on it, well before it could be done.
    states = _poison_then_five(sqlite_url, {"message_timeout": 1.0}, 16_000_000)
    assert states[0] == (InboundState.QUARANTINED, "worker died while processing (3 times)")
    assert states[1:] == [(InboundState.PROCESSED, None)] * 5
    killed = [m for m in caplog.messages if "(pipeline.message_timeout): killing it" in m]
    assert len(killed) == 3


def _limits(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/limits").read_text()
    return {line[:26].strip(): line[26:].split()[0] for line in text.splitlines()[1:]}


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc (Linux)")
def test_worker_processes_get_the_configured_address_space(sqlite_url: str) -> None:
    data = config_data(sqlite_url, pipeline={"worker_memory_limit": 700})
    daemon = Daemon(build_config(data, env={}))  # real worker processes
    daemon.start()
    try:
        [worker] = multiprocessing.active_children()
        assert worker.pid is not None
        pid = worker.pid
        wait_for(lambda: _limits(pid)["Max address space"] != "unlimited")
        assert _limits(pid)["Max address space"] == str(700 * 1024 * 1024)
    finally:
        daemon.stop()


def test_a_mail_too_big_for_the_workers_memory_is_quarantined_and_the_rest_go_on(
    sqlite_url: str,
) -> None:
    """Past its address space a worker fails on its own, not the OOM killer's choice of process."""
    # Parsing it takes well over 600 MB.
    states = _poison_then_five(sqlite_url, {"worker_memory_limit": 600}, 8_000_000)
    state, reason = states[0]
    assert state == InboundState.QUARANTINED
    assert reason is not None
    assert reason.startswith(("MemoryError", "worker died while processing")), reason
    assert states[1:] == [(InboundState.PROCESSED, None)] * 5
