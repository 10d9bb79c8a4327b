"""The SMTP/LMTP listener, through a real socket with smtplib."""

from __future__ import annotations

import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from mailsupport.config import build_config
from mailsupport.daemon import Daemon
from mailsupport.db.engine import read_session
from mailsupport.errors import ConfigError
from mailsupport.intake.smtp import LONG_LINE_LIMIT
from mailsupport.intake.writer import InboxWriter

from _fixtures import config_data, write_config
from support import inbound, make_mail, show_ticket, wait_for


def _send(
    daemon: Daemon, raw: bytes, rcpts: list[str] | None = None
) -> dict[str, tuple[int, bytes]]:
    assert daemon.smtp_address is not None
    host, port = daemon.smtp_address
    with smtplib.SMTP(host, port, timeout=30) as client:
        return client.sendmail("carol@customer.test", rcpts or ["support@example.com"], raw)


def _send_until_stored(daemon: Daemon, raw: bytes, attempts: int = 50) -> int:
    """Send as an MTA does: a 451 means try again later. Returns the number of 451s."""
    for refusals in range(attempts):
        try:
            _send(daemon, raw)
            return refusals
        except smtplib.SMTPDataError as exc:
            if exc.smtp_code != 451:
                raise
        time.sleep(0.1)
    raise AssertionError(f"still refused with 451 after {attempts} attempts")


class _Wire:
    """A raw client, for what smtplib cannot do: pause inside DATA, read every LMTP reply."""

    def __init__(self, sock: socket.socket) -> None:
        self._stream = sock.makefile("rwb")
        self.is_closed = False

    def send(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()

    def reply(self) -> bytes:
        """The last line of one reply, continuation lines skipped."""
        line = self._stream.readline()
        while line[3:4] == b"-":
            line = self._stream.readline()
        return line

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        """Whether the server has closed the connection (nothing more to read)."""
        self.is_closed = self._stream.readline() == b""
        return self.is_closed


@contextmanager
def _wire(daemon: Daemon, *, lmtp: bool = False) -> Iterator[_Wire]:
    """A greeted session; its short timeout makes a reply that never comes fail the test."""
    assert daemon.smtp_address is not None
    with socket.create_connection(daemon.smtp_address, timeout=10) as sock:
        wire = _Wire(sock)
        assert wire.reply().startswith(b"220")
        assert wire.command(b"LHLO client.test" if lmtp else b"EHLO client.test").startswith(b"250")
        yield wire
        if not wire.is_closed:
            assert wire.command(b"QUIT").startswith(b"221")  # the server ends its side first


def _stored_raw(daemon: Daemon, message_id: str) -> bytes:
    from sqlalchemy import select

    from mailsupport.db.models import Inbound

    assert daemon.app is not None
    with read_session(daemon.app.factory) as session:
        raw: bytes = session.execute(
            select(Inbound.raw).where(Inbound.message_id == message_id)
        ).scalar_one()
    return raw


def _crlf(mail: bytes) -> bytes:
    return mail.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _ticket_count(daemon: Daemon) -> int:
    from sqlalchemy import func, select

    from mailsupport.db.models import Ticket

    assert daemon.app is not None
    # A reader must not queue for the write lock: in the tests that shorten the busy timeout,
    # the pipeline or the outbox holding it would make the count itself fail.
    with read_session(daemon.app.factory) as session:
        return int(session.execute(select(func.count(Ticket.id))).scalar_one())


def _all_processed(daemon: Daemon, count: int) -> dict[str, tuple[str, str | None]] | None:
    """Each stored message's state and outcome, once ``count`` are stored and none pending."""
    assert daemon.app is not None
    with read_session(daemon.app.factory) as session:
        rows = session.execute(text("select message_id, state, outcome from inbound")).all()
    found = {row.message_id: (row.state, row.outcome) for row in rows}
    done = len(found) == count and all(state != "pending" for state, _ in found.values())
    return found if done else None


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


def test_mail_without_a_from_is_answered_at_its_mail_from(daemon: Daemon, config_file: str) -> None:
    assert daemon.smtp_address is not None
    raw = (
        b"To: support@example.com\r\nSubject: Printer on floor 3 is jammed\r\n"
        b"Message-ID: <no-from@example.org>\r\n\r\nThe printer is jammed again.\r\n"
    )
    with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
        assert client.sendmail("alice@example.org", ["support@example.com"], raw) == {}
        # A null sender is nobody to answer: this one waits in quarantine.
        nobody = raw.replace(b"<no-from@", b"<null-sender@")
        assert client.sendmail("<>", ["support@example.com"], nobody) == {}
    wait_for(lambda: _ticket_count(daemon) == 1)
    ticket = show_ticket(config_file, 1)
    assert ticket["requester"] == "alice@example.org"
    assert ticket["subject"] == "Printer on floor 3 is jammed"
    found = wait_for(lambda: _all_processed(daemon, 2))
    assert found["no-from@example.org"] == (
        "processed",
        "ticket #1: new ticket (sender from the envelope sender: alice@example.org)",
    )
    assert found["null-sender@example.org"][0] == "quarantined"


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
    # A connection of its own, as another process would have: nothing of the daemon's.
    engine = create_engine(daemon.config.database.url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                text("select count(*) from inbound where message_id = 'committed@customer.test'")
            ).scalar()
    finally:
        engine.dispose()
    assert stored == 1


def test_a_sender_address_with_a_nul_is_refused_and_the_session_goes_on(daemon: Daemon) -> None:
    assert daemon.smtp_address is not None
    with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
        client.ehlo()
        code, reply = client.docmd("MAIL FROM:<a\x00b@evil.test>")
        assert code == 501, reply
        client.sendmail("carol@customer.test", ["support@example.com"], make_mail())


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
        # With the 0.3 s timeout set here, the pipeline or the outbox holding the write lock
        # on a slow machine can refuse a retry too; the client then retries again, as MTAs do.
        _send_until_stored(daemon, raw)
        wait_for(lambda: _ticket_count(daemon) == 1)
        _send_until_stored(daemon, raw)  # a second, duplicate retry changes nothing
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


def _send_data_in_two(daemon: Daemon, first: bytes, rest: bytes) -> bytes:
    """Send DATA as ``first``, a pause, then ``rest``; the reply to the end of DATA.

    With ``first`` one reader limit long plus three bytes, the listener's read of it runs over
    the limit and stops two bytes short of its end: the pause makes the read happen before the
    rest arrives, so the last two bytes of ``first`` begin the next read.
    """
    with _wire(daemon) as wire:
        assert wire.command(b"MAIL FROM:<carol@customer.test>").startswith(b"250")
        assert wire.command(b"RCPT TO:<support@example.com>").startswith(b"250")
        assert wire.command(b"DATA").startswith(b"354")
        wire.send(first)
        time.sleep(1)
        wire.send(rest)
        return wire.reply()


def _head(message_id: str) -> bytes:
    head = _crlf(make_mail(message_id=message_id, body="The file follows\n"))
    assert b".\r\n" not in head  # no dot line before the one that ends DATA
    return head


def test_end_of_data_split_between_reads_is_found(daemon: Daemon) -> None:
    """The listener's read stops inside CRLF . CRLF, between its CR and LF."""
    head = _head("<split-end@customer.test>")
    lines = b"QUJD" * 19 + b"\r\n"
    mail = (head + lines * (LONG_LINE_LIMIT // len(lines)))[:LONG_LINE_LIMIT]
    assert len(mail) == LONG_LINE_LIMIT
    reply = _send_data_in_two(daemon, mail + b"\r\n.", b"\r\n")
    assert reply.startswith(b"250 "), reply
    assert _stored_raw(daemon, "split-end@customer.test") == mail + b"\r\n"


def test_line_end_split_between_reads_ends_the_line(daemon: Daemon) -> None:
    """A line near the limit, then another: the read stops between the CR and LF of the first.

    Neither line is over the limit, so the mail is accepted, not refused as one long line.
    """
    head = _head("<split-line@customer.test>")
    mail = head + b"x" * (LONG_LINE_LIMIT - len(head))
    reply = _send_data_in_two(daemon, mail + b"\r\ny", b"y" * 2000 + b"\r\n.\r\n")
    assert reply.startswith(b"250 "), reply
    stored = _stored_raw(daemon, "split-line@customer.test")
    assert stored == mail + b"\r\n" + b"y" * 2001 + b"\r\n"


@contextmanager
def _lmtp_daemon(sqlite_url: str, **sections: dict[str, Any]) -> Iterator[Daemon]:
    sections["smtp"] = {"lmtp": True, **sections.get("smtp", {})}
    with _running(sqlite_url, **sections) as daemon:
        yield daemon


@contextmanager
def _running(sqlite_url: str, **sections: dict[str, Any]) -> Iterator[Daemon]:
    config = build_config(config_data(sqlite_url, **sections), env={})
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


_TWO_RECIPIENTS = (b"support@example.com", b"sales@example.com")


def _lmtp_transaction(wire: _Wire, data: bytes) -> list[bytes]:
    """One mail to both recipients; the replies to the end of its DATA, one per recipient."""
    assert wire.command(b"MAIL FROM:<carol@customer.test>").startswith(b"250")
    for rcpt in _TWO_RECIPIENTS:
        assert wire.command(b"RCPT TO:<" + rcpt + b">").startswith(b"250")
    assert wire.command(b"DATA").startswith(b"354")
    wire.send(data + b".\r\n")
    return [wire.reply() for _ in _TWO_RECIPIENTS]


def _assert_session_goes_on(wire: _Wire) -> None:
    """No reply is left pending, and the next transaction is taken as usual."""
    assert wire.command(b"RSET").startswith(b"250")
    replies = _lmtp_transaction(wire, _crlf(make_mail()))
    assert all(reply.startswith(b"250 ") for reply in replies), replies
    assert wire.command(b"NOOP").startswith(b"250")


def test_lmtp_refuses_too_much_data_once_per_recipient(sqlite_url: str) -> None:
    with (
        _lmtp_daemon(sqlite_url, smtp={"max_message_size": 10_000}) as daemon,
        _wire(daemon, lmtp=True) as wire,
    ):
        replies = _lmtp_transaction(wire, _crlf(make_mail(body="y" * 20_000)))
        assert all(reply.startswith(b"552 ") for reply in replies), replies
        _assert_session_goes_on(wire)


def test_lmtp_refuses_a_long_line_once_per_recipient(sqlite_url: str) -> None:
    with _lmtp_daemon(sqlite_url) as daemon, _wire(daemon, lmtp=True) as wire:
        long_line = b"z" * LONG_LINE_LIMIT + b"\r\n"
        replies = _lmtp_transaction(wire, _crlf(make_mail()) + long_line)
        assert all(reply.startswith(b"500 ") for reply in replies), replies
        _assert_session_goes_on(wire)


def test_lmtp_451_once_per_recipient(sqlite_url: str) -> None:
    """A mail that cannot be stored is refused per recipient too, as a stored one is taken."""
    with (
        _lmtp_daemon(sqlite_url, database={"busy_timeout": 0.3}) as daemon,
        _wire(daemon, lmtp=True) as wire,
    ):
        blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            replies = _lmtp_transaction(wire, _crlf(make_mail()))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert all(reply.startswith(b"451 ") for reply in replies), replies
        _assert_session_goes_on(wire)


def _store_fails_unexpectedly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault of the listener's own, not the database's (which the writer turns into 451)."""

    async def broken(self: InboxWriter, mail: object) -> None:
        raise RuntimeError("a bug in the listener")

    monkeypatch.setattr(InboxWriter, "store", broken)


@pytest.mark.parametrize("lmtp", [False, True])
def test_an_unexpected_error_answers_421_and_closes_so_the_mail_is_retried(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, lmtp: bool
) -> None:
    with _running(sqlite_url, smtp={"lmtp": lmtp}) as daemon:
        with _wire(daemon, lmtp=lmtp) as wire:
            _store_fails_unexpectedly(monkeypatch)
            assert wire.command(b"MAIL FROM:<carol@customer.test>").startswith(b"250")
            assert wire.command(b"RCPT TO:<support@example.com>").startswith(b"250")
            assert wire.command(b"DATA").startswith(b"354")
            wire.send(_crlf(make_mail(message_id="<later@customer.test>")) + b".\r\n")
            assert wire.reply().startswith(b"421 4.3.0 "), "never a 5xx, which would bounce it"
            assert wire.closed()
        monkeypatch.undo()
        if not lmtp:
            assert _send(daemon, make_mail(message_id="<later@customer.test>")) == {}
            wait_for(lambda: _ticket_count(daemon) == 1)


def test_a_big_mail_is_hashed_off_the_event_loop(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a big mail's dedupe key is computed, the loop goes on serving other clients."""
    from mailsupport.core.dedupe import dedupe_key
    from mailsupport.db import rawmail
    from mailsupport.intake.writer import HASH_ON_LOOP_LIMIT

    threads: dict[int, str] = {}

    def recording(raw: bytes) -> Any:
        threads[len(raw)] = threading.current_thread().name
        return dedupe_key(raw)

    monkeypatch.setattr(rawmail, "dedupe_key", recording)
    small = _crlf(make_mail(message_id="<small@customer.test>"))
    big = _crlf(make_mail(message_id="<big@customer.test>")) + b"x\r\n" * HASH_ON_LOOP_LIMIT
    for raw in (small, big):
        assert _send(daemon, raw) == {}
    assert threads[len(small)] == "smtp"  # the listener's loop: cheap enough there
    assert threads[len(big)] not in ("smtp", "inbox-writer")


def test_big_mails_arriving_together_are_hashed_in_one_thread_by_turns(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each thread hashing at once is one more the event loop waits behind for the GIL."""
    from mailsupport.core.dedupe import dedupe_key
    from mailsupport.db import rawmail
    from mailsupport.intake.writer import HASH_ON_LOOP_LIMIT

    threads: list[str] = []

    def recording(raw: bytes) -> Any:
        threads.append(threading.current_thread().name)
        return dedupe_key(raw)

    monkeypatch.setattr(rawmail, "dedupe_key", recording)
    body = b"x\r\n" * HASH_ON_LOOP_LIMIT
    raws = [_crlf(make_mail(message_id=f"<big{n}@customer.test>")) + body for n in range(3)]
    senders = [threading.Thread(target=_send, args=(daemon, raw)) for raw in raws]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert threads == ["inbox-hash_0"] * 3


# --- connection limits ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _greeting(address: tuple[str, int], source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    """A new connection from ``source``, and the first line the listener says on it."""
    sock = socket.create_connection(address, timeout=30, source_address=(source, 0))
    return sock, sock.makefile("rb").readline()


def _delivered(address: tuple[str, int], message_id: str) -> bool:
    """Whether a mail gets through now; False while the listener still refuses with 421."""
    try:
        with smtplib.SMTP(*address, timeout=30) as client:
            client.sendmail(
                "c@customer.test", ["support@example.com"], make_mail(message_id=message_id)
            )
    except smtplib.SMTPConnectError as exc:
        assert exc.smtp_code == 421, exc
        return False
    return True


# The listener's process may open this many files: fewer than the connections a test opens.
_NOFILE = 256


def test_connections_beyond_the_cap_get_421_and_the_files_never_run_out(
    tmp_path: Path, sqlite_url: str
) -> None:
    """`mailsupport serve` under a small open-files limit, more idle clients than it allows."""
    port = _free_port()
    smtp = {"port": port, "max_connections": 40, "max_connections_per_ip": 40}
    config_file = write_config(tmp_path / "c.toml", config_data(sqlite_url, smtp=smtp))
    command = [sys.executable, "-m", "mailsupport", "-c", str(config_file), "serve"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["prlimit", f"--nofile={_NOFILE}", *command], stdout=out, stderr=out
        )
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: b"SMTP listener on" in log.read_bytes() or process.poll() is not None)
        assert process.poll() is None, log.read_text()
        refusals = []
        for _ in range(_NOFILE + 20):
            sock, greeting = _greeting(("127.0.0.1", port))
            if greeting.startswith(b"220"):
                idle.append(sock)
            else:
                refusals.append(greeting)
                sock.close()
        assert len(idle) == 40
        assert len(refusals) == _NOFILE + 20 - 40
        assert all(line.startswith(b"421 4.7.0 ") for line in refusals), set(refusals)
        assert not _delivered(("127.0.0.1", port), "<refused@customer.test>")
        for sock in idle:
            sock.close()
        idle.clear()
        wait_for(lambda: _delivered(("127.0.0.1", port), "<served@customer.test>"))
    finally:
        for sock in idle:
            sock.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    text = log.read_text()
    assert "Too many open files" not in text and "EMFILE" not in text, text


def test_idle_sessions_are_closed_with_421_and_free_their_place(sqlite_url: str) -> None:
    smtp = {"max_connections": 2, "idle_timeout": 3.0}
    with _running(sqlite_url, smtp=smtp) as daemon:
        assert daemon.smtp_address is not None
        idle = [_greeting(daemon.smtp_address) for _ in range(2)]
        assert all(greeting.startswith(b"220") for _, greeting in idle)
        _, refused = _greeting(daemon.smtp_address)
        assert refused.startswith(b"421 4.7.0 ")
        for sock, _ in idle:
            stream = sock.makefile("rb")
            assert stream.readline().startswith(b"421 4.4.2 ")
            assert stream.readline() == b""  # closed by the listener
            sock.close()
        assert _delivered(daemon.smtp_address, "<after-idle@customer.test>")


def test_a_slow_sender_within_data_is_not_idle(sqlite_url: str) -> None:
    """The idle timeout counts from the last bytes received, also in the middle of DATA."""
    with _running(sqlite_url, smtp={"idle_timeout": 1.0}) as daemon, _wire(daemon) as wire:
        assert wire.command(b"MAIL FROM:<carol@customer.test>").startswith(b"250")
        assert wire.command(b"RCPT TO:<support@example.com>").startswith(b"250")
        assert wire.command(b"DATA").startswith(b"354")
        wire.send(_crlf(make_mail(message_id="<slow@customer.test>")))
        for _ in range(5):  # 2.5 s of DATA in all, never 1 s without a line
            time.sleep(0.5)
            wire.send(b"more\r\n")
        wire.send(b".\r\n")
        assert wire.reply().startswith(b"250 ")


def test_one_client_address_cannot_take_every_session(sqlite_url: str) -> None:
    with _running(sqlite_url, smtp={"max_connections_per_ip": 2}) as daemon:
        address = daemon.smtp_address
        assert address is not None
        held = [_greeting(address) for _ in range(2)]
        assert all(greeting.startswith(b"220") for _, greeting in held)
        sock, refused = _greeting(address)
        sock.close()
        assert refused.startswith(b"421 4.7.0 ")
        other, greeting = _greeting(address, source="127.0.0.2")
        assert greeting.startswith(b"220")
        with smtplib.SMTP(*address, timeout=30, source_address=("127.0.0.3", 0)) as client:
            assert client.sendmail("c@customer.test", ["support@example.com"], make_mail()) == {}
        for sock, _ in [*held, (other, b"")]:
            sock.close()


def test_more_connections_than_the_process_may_open_files_for_stop_the_start(
    sqlite_url: str,
) -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        pytest.skip("this process may open any number of files")
    smtp = {"max_connections": soft}
    daemon = Daemon(
        build_config(config_data(sqlite_url, smtp=smtp), env={}), worker_processes=False
    )
    with pytest.raises(ConfigError) as refused:
        daemon.start()
    assert "smtp.max_connections" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_data_section_of_short_lines_is_read_in_little_memory() -> None:
    """DATA read in blocks as the listener reads it: never a string per line, nor three copies."""
    import tracemalloc

    from mailsupport.intake.smtp import _Section

    lines = LONG_LINE_LIMIT // 5 + 2  # a block a little over the reader's limit
    tracemalloc.start()
    try:
        section = _Section(None, LONG_LINE_LIMIT)
        for _ in range(8):
            section.add(b"..x\r\n" * lines)  # a block of its own, as read from the socket
        content = section.content()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert section.error is None
    assert content == b".x\r\n" * lines * 8
    assert peak < 2.5 * 5 * lines * 8
