"""The daemon as a whole: `mailsupport serve` in a real process, backlog after a crash."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from mailsupport.app import open_app
from mailsupport.config import build_config
from mailsupport.daemon import Daemon
from mailsupport.db.inbox import RawMail, store_one

from _fixtures import config_data, write_config
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


def test_killed_worker_loses_nothing(tmp_path: Path, sqlite_url: str) -> None:
    """Workers killed outright: accepted mail stays stored and is processed after restart."""
    config = build_config(config_data(sqlite_url, pipeline={"poll_interval": 60.0}), env={})
    daemon = Daemon(config)
    daemon.start()
    config_file = str(write_config(tmp_path / "c.toml", config_data(sqlite_url)))
    try:
        daemon.kill_workers()
        assert daemon.smtp_address is not None
        with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
            for i in range(5):
                client.sendmail(
                    f"k{i}@customer.test",
                    ["support@example.com"],
                    make_mail(sender=f"k{i}@customer.test"),
                )
        time.sleep(0.5)
        assert _tickets(config_file) == 0
    finally:
        daemon.stop()
    restarted = Daemon(config)
    restarted.start()
    try:
        wait_for(lambda: _tickets(config_file) == 5, timeout=60)
    finally:
        restarted.stop()


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
