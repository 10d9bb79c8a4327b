"""The daemon as a whole: `mailsupport serve` in a real process, backlog after a crash."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailsupport import workers
from mailsupport.app import open_app
from mailsupport.config import build_config, load_config
from mailsupport.daemon import Daemon
from mailsupport.db.inbox import RawMail, store_one
from mailsupport.errors import ConfigError

from _fixtures import config_data, write_config
from sink import Sink, SinkHandler
from support import make_mail, run_cli, show_ticket, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tickets(config_file: str) -> int:
    import json

    result = run_cli(config_file, "tickets", "list", "--json")
    return len(json.loads(result.stdout)) if result.exit_code == 0 else 0


def _connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_serve_in_a_process_end_to_end_and_sigterm(tmp_path: Path, sqlite_url: str) -> None:
    port = _free_port()
    config_file = str(
        write_config(tmp_path / "c.toml", config_data(sqlite_url, smtp={"port": port}))
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mailsupport", "-c", config_file, "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _connectable(port) or process.poll() is not None, timeout=60)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("carol@customer.test", ["support@example.com"], make_mail())
        wait_for(lambda: _tickets(config_file) == 1, timeout=30)
        assert show_ticket(config_file, 1)["requester"] == "carol@customer.test"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0
    assert not _connectable(port)
    log = process.stderr.read().decode() if process.stderr else ""
    # The checkpoint job runs every second; its runs are not news.
    assert "Running job" not in log and "skipped" not in log, log


def test_backlog_left_by_a_crash_is_processed_on_start(tmp_path: Path, sqlite_url: str) -> None:
    """Mail stored while nothing processed it (a crash after 250) is handled by the next start."""
    config = build_config(config_data(sqlite_url), env={})
    app = open_app(config, migrate=True)
    with app.factory.begin() as session:
        for i in range(3):
            store_one(
                session, RawMail(make_mail(sender=f"b{i}@customer.test"), "smtp"), app.clock.now()
            )
    app.close()
    daemon = Daemon(config)  # real worker processes
    daemon.start()
    try:
        config_file = str(write_config(tmp_path / "c.toml", config_data(sqlite_url)))
        wait_for(lambda: _tickets(config_file) == 3, timeout=60)
    finally:
        daemon.stop()


def test_a_killed_worker_is_replaced_and_loses_nothing(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers killed outright: the daemon starts new ones, which process what was accepted."""
    config = build_config(config_data(sqlite_url, pipeline={"poll_interval": 60.0}), env={})
    config_file = str(write_config(tmp_path / "c.toml", config_data(sqlite_url)))
    daemon = Daemon(config)  # real worker processes
    daemon.start()
    try:
        daemon.kill_workers()
        assert daemon.smtp_address is not None
        with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
            for i in range(5):
                sender = f"k{i}@customer.test"
                client.sendmail(sender, ["support@example.com"], make_mail(sender=sender))
        wait_for(lambda: _tickets(config_file) == 5, timeout=60)
    finally:
        daemon.stop()
    assert any("pipeline worker 1 died (exit code -9)" in m for m in caplog.messages)


def test_a_worker_killed_while_waiting_jams_nothing(tmp_path: Path, sqlite_url: str) -> None:
    """Killed while asleep waiting for mail: the listener still stores, the daemon still stops."""
    config = build_config(config_data(sqlite_url, pipeline={"poll_interval": 60.0}), env={})
    config_file = str(write_config(tmp_path / "c.toml", config_data(sqlite_url)))
    daemon = Daemon(config)  # real worker processes
    daemon.start()
    stopper = threading.Thread(target=daemon.stop, daemon=True)
    try:
        assert daemon.smtp_address is not None
        with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
            client.sendmail("a@customer.test", ["support@example.com"], make_mail())
        wait_for(lambda: _tickets(config_file) == 1, timeout=60)
        time.sleep(0.5)  # the worker is back asleep, waiting to be woken
        daemon.kill_workers()
        with smtplib.SMTP(*daemon.smtp_address, timeout=10) as client:
            for i in range(3):
                sender = f"k{i}@customer.test"
                client.sendmail(sender, ["support@example.com"], make_mail(sender=sender))
    finally:
        stopper.start()
        stopper.join(timeout=60)
    assert not stopper.is_alive()


def test_the_daemon_checkpoints_by_its_job_and_never_on_commit(sqlite_url: str) -> None:
    config = build_config(config_data(sqlite_url), env={})
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        assert daemon.app is not None and daemon.smtp_address is not None
        with daemon.app.engine.connect() as conn:
            # A commit past 1000 pages would copy the WAL while a sender waits for its 250.
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        database = Path(config.database.url.removeprefix("sqlite:///"))
        before = database.stat().st_size
        with smtplib.SMTP(*daemon.smtp_address) as client:
            client.sendmail("ann@customer.test", ["support@example.com"], make_mail())
        # What was committed reaches the database file within a few runs of the job.
        wait_for(lambda: database.stat().st_size > before, timeout=5)
    finally:
        daemon.stop()


class _GatedHandler(SinkHandler):
    """A relay that holds the first DATA until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.holding = threading.Event()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        if not self.received:
            self.holding.set()
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)  # type: ignore[arg-type]


def test_mail_queued_while_the_outbox_sends_goes_out_without_waiting_an_interval(
    sqlite_url: str,
) -> None:
    relay = Sink()
    relay.handler = _GatedHandler()
    relay.start()
    config = build_config(
        config_data(
            sqlite_url,
            relay={"port": relay.port, "timeout": 30.0},
            outbound={"send_interval": 600.0},
            notifications={"combine_seconds": 0},
        ),
        env={},
    )
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        assert daemon.smtp_address is not None and isinstance(relay.handler, _GatedHandler)
        with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
            client.sendmail("a@customer.test", ["support@example.com"], make_mail())
            # The sender is now inside its sweep, holding the first acknowledgement at DATA.
            assert relay.handler.holding.wait(30)
            client.sendmail(
                "b@customer.test", ["support@example.com"], make_mail(sender="b@customer.test")
            )
        # The second acknowledgement is queued, and its wake-up given, while the sweep runs.
        time.sleep(2.0)
        relay.handler.gate.set()
        wait_for(lambda: relay.to("b@customer.test"), timeout=20)
    finally:
        daemon.stop()
        relay.stop()


def test_a_worker_that_does_not_stop_in_time_is_killed(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers, "STOP_TIMEOUT", 0.5)
    config = build_config(config_data(sqlite_url, pipeline={"poll_interval": 60.0}), env={})
    daemon = Daemon(config)  # real worker processes
    daemon.start()
    assert daemon.app is not None
    time.sleep(2.0)  # the worker has swept the empty backlog and sleeps
    with daemon.app.factory.begin() as session:
        store_one(session, RawMail(make_mail(), "smtp"), daemon.app.clock.now())
    database = sqlite3.connect(config.database.url.removeprefix("sqlite:///"))
    try:
        database.execute("BEGIN IMMEDIATE")  # the worker will wait for the write lock
        daemon.wake_pipeline()
        time.sleep(0.5)
        started = time.monotonic()
        daemon.stop()
        assert time.monotonic() - started < 5.0  # less than the worker's wait for the lock
    finally:
        database.rollback()
        database.close()
    assert any("pipeline worker 1 did not stop: killing it" in m for m in caplog.messages)


def test_a_start_that_fails_stops_what_it_had_started(sqlite_url: str) -> None:
    """Worker processes and threads started before the listener failed must not run on."""
    import multiprocessing

    threads_before = set(threading.enumerate())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = config_data(sqlite_url, smtp={"port": port}, outbound={"send_interval": 600})
        daemon = Daemon(build_config(data, env={}))  # real worker processes
        with pytest.raises(OSError):
            daemon.start()
    assert multiprocessing.active_children() == []
    left = [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert left == []


def test_a_database_locked_by_another_process_is_one_warning_then_one_info(
    sqlite_url: str, relay: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES

    caplog.set_level(logging.INFO, logger="mailsupport")
    data = config_data(
        sqlite_url,
        database={"busy_timeout": 0.3},
        relay={"port": relay.port},
        outbound={"send_interval": 0.05},  # fires several times during each wait for the lock
    )
    daemon = Daemon(build_config(data, env={}), worker_processes=False)
    daemon.start()
    fired: list[int] = []
    try:
        assert daemon._scheduler is not None and daemon.smtp_address is not None
        daemon._scheduler.add_listener(
            lambda event: fired.append(event.code) if event.job_id == "outbox" else None,
            EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES,
        )
        blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            # Long enough for several sweeps to give up on the lock, each after 0.3 s.
            wait_for(lambda: len(fired) >= 40, timeout=60)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
            client.sendmail("carol@customer.test", ["support@example.com"], make_mail())
        wait_for(lambda: relay.to("carol@customer.test"), timeout=30)  # the acknowledgement
    finally:
        daemon.stop()
    assert EVENT_JOB_MAX_INSTANCES not in fired and EVENT_JOB_ERROR not in fired
    loud = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, loud
    assert loud[0][0] == "mailsupport.daemon"
    assert "outbox: the database is locked by another connection (database is locked)" in loud[0][1]
    freed = [m for m in caplog.messages if "outbox: the database is free again" in m]
    assert len(freed) == 1


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> set[int]:
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return {child for child in pids if _parent_of(child) == pid}


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's new parent may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _none_running(pids: set[int]) -> bool:
    return not any(_running(pid) for pid in pids)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_die_with_a_daemon_killed_right_after_its_start(
    tmp_path: Path, sqlite_url: str
) -> None:
    """``kill -9`` of serve as soon as it listens: none of its processes works on as an orphan."""
    port = _free_port()
    config_file = str(
        write_config(tmp_path / "c.toml", config_data(sqlite_url, smtp={"port": port}))
    )
    children: set[int] = set()
    try:
        for _ in range(3):
            children.update(_kill_as_soon_as_it_listens(config_file, port))
            wait_for(functools.partial(_none_running, children), timeout=15)
    finally:
        for pid in children:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _kill_as_soon_as_it_listens(config_file: str, port: int) -> set[int]:
    """Start serve, ``kill -9`` it the moment its port opens; its children at that moment."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mailsupport", "-c", config_file, "serve"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _connectable(port) or process.poll() is not None, 60, 0.005)
        children = _children(process.pid)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert children, "serve had started no worker by the time it listened"
    return children


class _StallingHandler(SinkHandler):
    """A relay that never answers the first DATA: the sender waits in it, holding its claim."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        if not self.holding.is_set():
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return "451 4.3.0 gone"  # its client was killed long ago
        return await super().handle_DATA(server, session, envelope)  # type: ignore[arg-type]


def _serve(config_file: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailsupport", "-c", config_file, "serve"],
        stderr=subprocess.PIPE,
    )


def test_a_daemon_killed_while_sending_sends_at_once_when_started_again(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Its own claims do not wait out the lease meant for other daemons (4 minutes here)."""
    relay = Sink()
    handler = _StallingHandler()
    relay.handler = handler
    relay.start()
    port = _free_port()
    data = config_data(sqlite_url, smtp={"port": port}, relay={"port": relay.port, "timeout": 60.0})
    config_file = str(write_config(tmp_path / "c.toml", data))
    process = _serve(config_file)
    try:
        wait_for(lambda: _connectable(port) or process.poll() is not None, timeout=60)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("carol@customer.test", ["support@example.com"], make_mail())
        assert handler.holding.wait(60)  # the acknowledgement is claimed, and on the wire
        process.kill()
        process.wait(timeout=30)
        handler.release.set()
        process = _serve(config_file)
        wait_for(lambda: relay.to("carol@customer.test"), timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        relay.stop()
    assert code == 0
    [ack] = relay.to("carol@customer.test")
    assert "[ACME #1]" in ack.message["Subject"]


def test_a_second_daemon_as_the_same_instance_is_refused_in_one_line(
    tmp_path: Path, sqlite_url: str
) -> None:
    port = _free_port()
    config_file = str(
        write_config(tmp_path / "c.toml", config_data(sqlite_url, smtp={"port": port}))
    )
    first = _serve(config_file)
    try:
        wait_for(lambda: _connectable(port) or first.poll() is not None, timeout=60)
        second = _serve(config_file)
        _out, err = second.communicate(timeout=60)
        assert second.returncode == 1
        lines = [line for line in err.decode().splitlines() if "INFO" not in line]
        assert lines == [
            f"Another mailsupport daemon is running as instance "
            f"'{socket.gethostname()}:{Path(config_file).resolve()}' (daemon.instance)."
        ]
        assert first.poll() is None and _connectable(port)
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0


def test_a_daemon_is_its_host_and_config_file_unless_named(tmp_path: Path) -> None:
    host = socket.gethostname()
    config_file = write_config(tmp_path / "c.toml", {"smtp": {"port": 2525}})
    assert load_config(config_file).instance == f"{host}:{config_file.resolve()}"
    url = {"database": {"url": "postgresql+psycopg://ms:s3cret@db/ms"}}
    assert build_config(url, env={}).instance == f"{host}:postgresql+psycopg://ms@db/ms"
    named = {"daemon": {"instance": "mx1"}}
    assert build_config(named, env={}).instance == "mx1"
    with pytest.raises(ConfigError, match=r"^Invalid config: daemon.instance must be at most"):
        build_config({"daemon": {"instance": "two\nlines"}}, env={})
