"""The SMTP/LMTP listener, through a real socket with smtplib."""

from __future__ import annotations

import smtplib
import socket
import sqlite3
from pathlib import Path

import pytest

from mailsupport.config import build_config
from mailsupport.daemon import Daemon

from _fixtures import config_data, write_config
from support import inbound, make_mail, show_ticket, wait_for


def _send(
    daemon: Daemon, raw: bytes, rcpts: list[str] | None = None
) -> dict[str, tuple[int, bytes]]:
    assert daemon.smtp_address is not None
    host, port = daemon.smtp_address
    with smtplib.SMTP(host, port, timeout=30) as client:
        return client.sendmail("carol@customer.test", rcpts or ["support@example.com"], raw)


def _ticket_count(daemon: Daemon) -> int:
    from sqlalchemy import func, select

    from mailsupport.db.models import Ticket

    assert daemon.app is not None
    with daemon.app.factory() as session:
        return int(session.execute(select(func.count(Ticket.id))).scalar_one())


def test_mail_becomes_ticket_one(daemon: Daemon, config_file: str) -> None:
    refused = _send(daemon, make_mail(subject="Printer on floor 3 is jammed"))
    assert refused == {}
    wait_for(lambda: _ticket_count(daemon) == 1)
    ticket = show_ticket(config_file, 1)
    assert ticket["subject"] == "Printer on floor 3 is jammed"
    assert ticket["status"] == "new"
    assert ticket["requester"] == "carol@customer.test"
    assert ticket["queue"] == "support"
    assert ticket["messages"][0]["direction"] == "in"
    assert ticket["messages"][0]["thread_reason"] == "new ticket"


def test_250_only_after_commit(daemon: Daemon) -> None:
    """Once the client has its 250 the message is readable from a fresh connection."""
    assert daemon.smtp_address is not None
    raw = make_mail(message_id="<committed@customer.test>")
    with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
        client.ehlo()
        client.mail("carol@customer.test")
        client.rcpt("support@example.com")
        code, reply = client.data(raw)
    assert code == 250, reply
    url = daemon.config.database.url
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            rows = db.execute(
                "select count(*) from inbound where message_id = 'committed@customer.test'"
            ).fetchone()
        assert rows == (1,)


def test_foreign_recipient_is_refused(daemon: Daemon) -> None:
    assert daemon.smtp_address is not None
    with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
        client.ehlo()
        client.mail("spammer@bad.test")
        code, reply = client.rcpt("victim@elsewhere.test")
        assert code == 550, reply
        code, _ = client.rcpt("Sales@Example.com")
        assert code == 250


def test_size_is_advertised_and_enforced(tmp_path: Path, sqlite_url: str) -> None:
    config = build_config(config_data(sqlite_url, smtp={"max_message_size": 10_000}), env={})
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        assert daemon.smtp_address is not None
        with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
            client.ehlo()
            assert client.has_extn("size")
            assert client.esmtp_features["size"] == "10000"
            with pytest.raises(smtplib.SMTPSenderRefused) as declared:
                client.sendmail("c@customer.test", ["support@example.com"], b"x", ["SIZE=20000"])
            assert declared.value.smtp_code == 552
            client.rset()
            # A client that does not declare SIZE is stopped when the data runs over.
            client.mail("c@customer.test")
            client.rcpt("support@example.com")
            code, _ = client.data(make_mail(body="y" * 20_000))
            assert code == 552
    finally:
        daemon.stop()


def test_451_when_database_is_locked_then_retry_gives_one_ticket(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A real write failure: another process holds SQLite's write lock past our timeout."""
    config = build_config(config_data(sqlite_url, database={"busy_timeout": 0.3}), env={})
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    raw = make_mail(message_id="<retry-me@customer.test>")
    try:
        assert daemon.smtp_address is not None
        blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                _send(daemon, raw)
            assert refused.value.smtp_code == 451
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert _send(daemon, raw) == {}
        # Once the pipeline is done with it: while it holds the write lock, the short timeout
        # set here would refuse the duplicate too.
        wait_for(lambda: _ticket_count(daemon) == 1)
        assert _send(daemon, raw) == {}  # a second, duplicate retry changes nothing
        config_path = write_config(tmp_path / "c.toml", config_data(sqlite_url))
        assert len(inbound(show_ticket(str(config_path), 1))) == 1
        assert _ticket_count(daemon) == 1
    finally:
        daemon.stop()


def test_lmtp_answers_once_per_accepted_recipient(tmp_path: Path, sqlite_url: str) -> None:
    config = build_config(config_data(sqlite_url, smtp={"lmtp": True}), env={})
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        assert daemon.smtp_address is not None
        with socket.create_connection(daemon.smtp_address, timeout=30) as sock:
            stream = sock.makefile("rwb")
            stream.readline()  # greeting

            def command(line: bytes) -> list[bytes]:
                stream.write(line + b"\r\n")
                stream.flush()
                replies = [stream.readline()]
                while replies[-1][3:4] == b"-":
                    replies.append(stream.readline())
                return replies

            command(b"LHLO client.test")
            command(b"MAIL FROM:<c@customer.test>")
            assert command(b"RCPT TO:<support@example.com>")[0].startswith(b"250")
            assert command(b"RCPT TO:<nobody@example.com>")[0].startswith(b"550")
            assert command(b"RCPT TO:<sales@example.com>")[0].startswith(b"250")
            assert command(b"DATA")[0].startswith(b"354")
            stream.write(make_mail().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n"))
            stream.write(b".\r\n")
            stream.flush()
            first, second = stream.readline(), stream.readline()
            assert first.startswith(b"250 ") and second.startswith(b"250 ")
            assert command(b"NOOP")[0].startswith(b"250")  # no third reply was pending
            assert command(b"QUIT")[0].startswith(b"221")
        wait_for(lambda: _ticket_count(daemon) == 1)
    finally:
        daemon.stop()


def test_data_is_stored_exactly_as_sent(daemon: Daemon) -> None:
    """Dot-stuffing undone, long lines kept, nothing else touched."""
    assert daemon.smtp_address is not None and daemon.app is not None
    body = ".leading dot\r\n..two dots\r\n.\r\nnot the end\r\n" + "x" * 5000 + "\r\n"
    raw = (
        make_mail(message_id="<exact@customer.test>")
        .replace(b"\n", b"\r\n")
        .replace(b"\r\r\n", b"\r\n")
    )
    raw += body.encode()
    with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
        client.sendmail("carol@customer.test", ["support@example.com"], raw)
    from sqlalchemy import select

    from mailsupport.db.models import Inbound

    with daemon.app.factory() as session:
        stored = session.execute(
            select(Inbound.raw).where(Inbound.message_id == "exact@customer.test")
        ).scalar_one()
    assert stored == raw
