"""IMAP intake against real servers: pymap (pip) and Dovecot, each on a loopback port.

Every test using ``server`` runs once per server; a server missing here is skipped with the
reason. Each test works in folders of its own, so the tests share one server per module.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from imapserver import Remote, imap_toml, imapd, unique_folder
from sqlalchemy import func, select

from mailsupport.app import App, open_app
from mailsupport.clock import SystemClock
from mailsupport.config import Config, build_config
from mailsupport.daemon import Daemon
from mailsupport.db.imapstate import FolderKey, checkpoints
from mailsupport.db.inbox import RawMail, Stored
from mailsupport.db.models import Inbound, InboundState, Ticket
from mailsupport.intake.imap import AccountPoller
from mailsupport.intake.mailbox import Finish, Mailbox, finish_plan, plan_batches

from _fixtures import config_data, write_config
from support import make_mail, run_cli, wait_for

SEEN = rb"\Seen"
DELETED = rb"\Deleted"


# --- pure parts ---------------------------------------------------------------------------------


def test_finish_plan_follows_the_capabilities() -> None:
    everything = {"MOVE", "UIDPLUS", "IDLE"}
    assert finish_plan("move", everything) is Finish.MOVE
    assert finish_plan("move", {"UIDPLUS"}) is Finish.COPY
    # Without UID EXPUNGE nothing is expunged: other clients' \Deleted mail would go too.
    assert finish_plan("move", set()) is Finish.FLAG
    assert finish_plan("delete", everything) is Finish.DELETE
    assert finish_plan("delete", {"MOVE"}) is Finish.MARK_DELETED
    assert finish_plan("flag", everything) is Finish.FLAG


def test_batches_are_bounded_and_in_uid_order() -> None:
    sizes = {7: 10, 3: 10, 5: 10, 9: 10, 11: 10}
    assert plan_batches(sizes, max_messages=2, max_bytes=1000) == [[3, 5], [7, 9], [11]]
    assert plan_batches(sizes, max_messages=10, max_bytes=25) == [[3, 5], [7, 9], [11]]
    assert plan_batches({1: 500}, max_messages=10, max_bytes=25) == [[1]]  # too big alone: alone
    assert plan_batches({}) == []


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=imapd.KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    try:
        running = imapd.start(request.param)
    except imapd.Unavailable as exc:
        pytest.skip(str(exc))
    yield running
    running.stop()


@dataclass
class Box:
    """A test's own folders on the shared server, and a client to fill and inspect them."""

    server: Any
    remote: Remote
    inbox: str
    done: str

    def account(self, **values: Any) -> dict[str, Any]:
        return {
            "name": "main",
            "host": self.server.host,
            "port": self.server.port,
            "tls": "none",
            "username": self.server.user,
            "password": self.server.password,
            "folder": self.inbox,
            "after": f"move:{self.done}",
            "timeout": 10.0,
            **values,
        }


@pytest.fixture
def box(server: Any) -> Iterator[Box]:
    remote = Remote(server)
    inbox = unique_folder("Support")
    remote.create(inbox)
    yield Box(server, remote, inbox, unique_folder("Done"))
    remote.close()


def make_config(db_url: str, *accounts: dict[str, Any], **sections: Any) -> Config:
    data = config_data(db_url, smtp={"enabled": False}, **sections)
    data["imap"] = list(accounts)
    return build_config(data, env={})


def config_file(path: Path, db_url: str, *accounts: dict[str, Any], **sections: Any) -> str:
    data = config_data(db_url, smtp={"enabled": False}, **sections)
    write_config(path, data)
    with path.open("a", encoding="utf-8") as out:
        out.write(imap_toml(accounts))
    return str(path)


@pytest.fixture
def opened() -> Iterator[list[App]]:
    apps: list[App] = []
    yield apps
    for app in apps:
        app.close()


def open_db(config: Config, opened: list[App]) -> App:
    app = open_app(config, migrate=True)
    opened.append(app)
    return app


def poller(app: App, cls: type[AccountPoller] = AccountPoller, index: int = 0) -> AccountPoller:
    return cls(app.config.imap[index], app.factory, SystemClock())


def stored(app: App) -> list[str]:
    """Message-IDs of the stored mail, one entry per stored row."""
    with app.factory() as session:
        return list(session.execute(select(Inbound.message_id).order_by(Inbound.id)).scalars())


def tickets(app: App) -> int:
    with app.factory() as session:
        return int(session.execute(select(func.count(Ticket.id))).scalar_one())


def mails(prefix: str, count: int) -> list[bytes]:
    return [
        make_mail(
            sender=f"{prefix}{i}@customer.test",
            subject=f"{prefix} question {i}",
            message_id=f"<{prefix}-{i}@customer.test>",
        )
        for i in range(count)
    ]


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}@customer.test" for i in range(count)]


class Crash(Exception):
    """The process dying at a chosen point."""


class CrashBeforeCommit(AccountPoller):
    def store(self, mails: list[RawMail], last_uid: int, backlog: int) -> list[Stored]:
        raise Crash("killed after the fetch, before the commit")


class CrashBeforeFinish(AccountPoller):
    def finish(self, box: Mailbox, uids: list[int]) -> None:
        raise Crash("killed after the commit, before the move")


class Counting(AccountPoller):
    """Counts the batches it stores: a restart that re-fetched stored mail would show here."""

    batches = 0

    def store(self, mails: list[RawMail], last_uid: int, backlog: int) -> list[Stored]:
        type(self).batches += 1
        return super().store(mails, last_uid, backlog)


# --- exactly once -------------------------------------------------------------------------------


def test_appended_mail_becomes_tickets_once_and_ends_in_the_folder(
    box: Box, db_url: str, opened: list[App]
) -> None:
    """Mail there before the start and mail pushed while idling: each stored once, then moved."""
    config = make_config(db_url, box.account(queue="billing"))
    box.remote.append_all(box.inbox, mails("before", 3))
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        box.remote.append_all(box.inbox, mails("pushed", 4))
        app = open_db(config, opened)
        wait_for(lambda: tickets(app) == 7 and box.remote.count(box.done) == 7, timeout=30)
    finally:
        daemon.stop()
    assert sorted(stored(app)) == sorted(ids("before", 3) + ids("pushed", 4))
    assert box.remote.count(box.inbox) == 0  # and the target folder was created for us
    with app.factory() as session:
        rows = session.execute(select(Inbound)).scalars().all()
        opened_tickets = session.execute(select(Ticket)).scalars().all()
        assert {r.channel for r in rows} == {"imap"}
        assert {r.queue for r in rows} == {"billing"}
        # Sent to support@example.com, yet the account's queue wins.
        assert {t.queue.name for t in opened_tickets} == {"billing"}
        state = checkpoints(session)[FolderKey("main", box.inbox)]
        assert state.last_uid > 0 and state.backlog == 0


@pytest.mark.parametrize("after", ["flag", "delete"])
def test_other_after_actions(box: Box, sqlite_url: str, opened: list[App], after: str) -> None:
    app = open_db(make_config(sqlite_url, box.account(after=after)), opened)
    box.remote.append_all(box.inbox, mails(after, 3))
    assert poller(app).run_once() == 3
    left = box.remote.messages(box.inbox)
    if after == "flag":
        assert len(left) == 3
        assert all(SEEN in flags for flags, _raw in left.values())
    else:
        assert left == {}
    Counting.batches = 0
    assert poller(app, Counting).run_once() == 0
    assert Counting.batches == 0
    assert sorted(stored(app)) == ids(after, 3)


def test_mail_already_read_is_still_taken_in(box: Box, sqlite_url: str, opened: list[App]) -> None:
    """\\Seen is a person's business, never our cursor."""
    app = open_db(make_config(sqlite_url, box.account()), opened)
    read, unread = mails("read", 1)[0], mails("unread", 1)[0]
    box.remote.append(box.inbox, read, flags=[SEEN])
    box.remote.append(box.inbox, unread)
    assert poller(app).run_once() == 2
    assert sorted(stored(app)) == ["read-0@customer.test", "unread-0@customer.test"]
    moved = box.remote.messages(box.done)
    # Fetched with BODY.PEEK[]: what was unread is still unread.
    assert sorted(SEEN in flags for flags, _raw in moved.values()) == [False, True]


def test_crash_after_fetch_before_commit(box: Box, db_url: str, opened: list[App]) -> None:
    app = open_db(make_config(db_url, box.account()), opened)
    box.remote.append_all(box.inbox, mails("fetched", 3))
    with pytest.raises(Crash):
        poller(app, CrashBeforeCommit).run_once()
    assert stored(app) == []
    untouched = box.remote.messages(box.inbox)
    assert len(untouched) == 3 and not any(SEEN in f for f, _raw in untouched.values())
    assert poller(app).run_once() == 3  # the restart
    assert sorted(stored(app)) == ids("fetched", 3)
    assert box.remote.count(box.inbox) == 0
    assert box.remote.count(box.done) == 3


def test_crash_after_commit_before_move(box: Box, db_url: str, opened: list[App]) -> None:
    app = open_db(make_config(db_url, box.account()), opened)
    box.remote.append_all(box.inbox, mails("committed", 3))
    with pytest.raises(Crash):
        poller(app, CrashBeforeFinish).run_once()
    assert sorted(stored(app)) == ids("committed", 3)
    assert box.remote.count(box.inbox) == 3
    Counting.batches = 0
    assert poller(app, Counting).run_once() == 0  # the restart
    assert Counting.batches == 0  # nothing fetched or stored again: the checkpoint covers it
    assert box.remote.count(box.inbox) == 0
    assert box.remote.count(box.done) == 3
    assert sorted(stored(app)) == ids("committed", 3)


def _sqlite_count(url: str) -> int:
    path = url.removeprefix("sqlite:///")
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return int(db.execute("select count(*) from inbound").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created yet


def _serve(config_path: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mailsupport", "-c", config_path, "serve"],
            stdout=out,
            stderr=out,
        )


def test_serve_killed_outright_then_restarted(
    box: Box, tmp_path: Path, sqlite_url: str, opened: list[App]
) -> None:
    """SIGKILL of ``mailsupport serve`` while it takes a backlog in, then a restart."""
    accounts = box.account()
    path = config_file(tmp_path / "c.toml", sqlite_url, accounts, pipeline={"workers": 0})
    box.remote.append_all(box.inbox, mails("backlog", 300))
    log = tmp_path / "serve.log"
    process = _serve(path, log)
    try:
        wait_for(lambda: _sqlite_count(sqlite_url) > 0 or process.poll() is not None, timeout=60)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, log.read_text()
    box.remote.append_all(box.inbox, mails("later", 10))
    process = _serve(path, log)
    try:
        wait_for(
            lambda: box.remote.count(box.done) == 310 and box.remote.count(box.inbox) == 0,
            timeout=60,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    app = open_db(make_config(sqlite_url, accounts), opened)
    assert sorted(stored(app)) == sorted(ids("backlog", 300) + ids("later", 10))


def test_uidvalidity_change_loses_nothing_and_duplicates_nothing(
    box: Box, sqlite_url: str, opened: list[App]
) -> None:
    app = open_db(make_config(sqlite_url, box.account(after="flag")), opened)
    first = mails("renumbered", 3)
    box.remote.append_all(box.inbox, first)
    assert poller(app).run_once() == 3
    before = box.remote.uidvalidity(box.inbox)
    box.remote.recreate(box.inbox)  # as after a server migration: same mail, new numbers
    box.remote.append_all(box.inbox, [*first, *mails("new", 1)])
    assert box.remote.uidvalidity(box.inbox) != before
    assert poller(app).run_once() == 1
    assert sorted(stored(app)) == sorted([*ids("renumbered", 3), "new-0@customer.test"])
    left = box.remote.messages(box.inbox)
    assert len(left) == 4 and all(SEEN in flags for flags, _raw in left.values())


def test_mail_announced_with_an_answer_is_not_left_for_the_idle_refresh(box: Box) -> None:
    """New mail announced along with a SEARCH's answer is not announced again in IDLE."""
    config = make_config("sqlite://", box.account())
    with Mailbox.open(config.imap[0]) as mailbox:
        mailbox.select()
        mailbox.take_announcements()  # what SELECT said
        assert mailbox.new_uids(0) == []
        assert not mailbox.take_announcements()
        box.remote.append_all(box.inbox, mails("meanwhile", 1))
        mailbox.new_uids(0)  # the server says EXISTS with this answer, whatever it found
        assert mailbox.take_announcements()
        assert not mailbox.take_announcements()
        # Mail arriving just before IDLE may be announced in the packet of IDLE's continuation.
        box.remote.append_all(box.inbox, mails("before-idle", 1))
        started = time.monotonic()
        mailbox.wait_for_mail(threading.Event(), 10.0)
        assert time.monotonic() - started < 5.0


# --- one bad message, one bad account -----------------------------------------------------------


def _nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\ndeep down\r\n"
    for level in range(depth):
        boundary = b"b%d" % level
        body = b'Content-Type: multipart/mixed; boundary="%s"\r\n\r\n--%s\r\n%s\r\n--%s--\r\n' % (
            boundary,
            boundary,
            body,
            boundary,
        )
    return b"From: a@customer.test\r\nSubject: deep\r\nMessage-ID: <deep@customer.test>\r\n" + body


def _quarantined(app: App) -> int:
    with app.factory() as session:
        query = select(func.count(Inbound.id)).where(Inbound.state == InboundState.QUARANTINED)
        return int(session.execute(query).scalar_one())


def test_unprocessable_mail_is_quarantined_and_the_account_goes_on(
    box: Box, sqlite_url: str, opened: list[App]
) -> None:
    config = make_config(sqlite_url, box.account())
    app = open_db(config, opened)
    box.remote.append(box.inbox, _nested(150))
    box.remote.append_all(box.inbox, mails("fine", 1))
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        wait_for(lambda: _quarantined(app) == 1 and tickets(app) == 1, timeout=30)
        box.remote.append_all(box.inbox, mails("after", 1))
        wait_for(lambda: tickets(app) == 2 and box.remote.count(box.done) == 3, timeout=30)
    finally:
        daemon.stop()
    assert box.remote.count(box.inbox) == 0


def _status(path: str) -> dict[str, dict[str, Any]]:
    result = run_cli(path, "imap", "status", "--json")
    assert result.exit_code == 0, result.output
    return {a["name"]: a for a in json.loads(result.stdout)}


def test_a_failing_account_never_stops_the_others(
    box: Box, tmp_path: Path, sqlite_url: str, opened: list[App]
) -> None:
    accounts = [
        box.account(name="good"),
        box.account(name="wrong-password", password="not-the-password"),
        box.account(name="down", port=imapd.free_port()),  # nothing listens there
    ]
    path = config_file(tmp_path / "c.toml", sqlite_url, *accounts)
    config = make_config(sqlite_url, *accounts)
    app = open_db(config, opened)
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        box.remote.append_all(box.inbox, mails("still", 2))
        wait_for(lambda: tickets(app) == 2 and box.remote.count(box.done) == 2, timeout=30)
        status = wait_for(
            lambda: (
                (s := _status(path))["wrong-password"]["last_error"]
                and s["down"]["last_error"]
                and s
            ),
            timeout=30,
        )
    finally:
        daemon.stop()
    assert status["good"]["connected"] is True
    assert status["good"]["last_error"] is None
    assert status["good"]["backlog"] == 0
    assert status["good"]["last_uid"] > 0
    assert status["wrong-password"]["connected"] is False
    assert "Cannot log in to IMAP account wrong-password" in status["wrong-password"]["last_error"]
    assert status["down"]["connected"] is False
    # Stopped: the accounts say so.
    assert _status(path)["good"]["connected"] is False


# --- the command line ---------------------------------------------------------------------------


def test_imap_test_looks_and_changes_nothing(box: Box, tmp_path: Path, sqlite_url: str) -> None:
    path = config_file(
        tmp_path / "c.toml",
        sqlite_url,
        box.account(),
        box.account(name="bad", password="nope"),
    )
    box.remote.append_all(box.inbox, mails("look", 2))
    before = box.remote.messages(box.inbox)
    result = run_cli(path, "imap", "test", "main")
    assert result.exit_code == 0, result.output
    assert f"{box.inbox}: 2 message(s), 2 not taken in yet" in result.output
    assert "Folders: " in result.output and box.inbox in result.output
    assert f"move to {box.done} (created at the first start)" in result.output
    assert box.remote.messages(box.inbox) == before  # flags included
    assert not box.remote.exists(box.done)

    missing = run_cli(path, "imap", "test", "nosuch")
    assert missing.exit_code == 1
    assert missing.output.strip() == "No such IMAP account: nosuch"
    refused = run_cli(path, "imap", "test", "bad")
    assert refused.exit_code == 1
    assert refused.output.strip().startswith("Cannot log in to IMAP account bad")
    assert "\n" not in refused.output.strip()

    text = run_cli(path, "imap", "status")
    assert text.exit_code == 0
    assert text.output.startswith("main ") and "not connected" in text.output


# --- servers without MOVE, UIDPLUS or IDLE (Dovecot told to announce less) ----------------------


@pytest.fixture
def limited(request: pytest.FixtureRequest) -> Iterator[Any]:
    try:
        running = imapd.start_dovecot(capabilities=request.param)
    except imapd.Unavailable as exc:
        pytest.skip(str(exc))
    yield running
    running.stop()


class ConcurrentClient(AccountPoller):
    """Another client adds a message flagged \\Deleted while our first batch is finished."""

    remote: Remote
    folder: str
    left_after_first: dict[int, tuple[tuple[bytes, ...], bytes]] | None = None

    def finish(self, box: Mailbox, uids: list[int]) -> None:
        first = self.left_after_first is None
        if first:
            self.remote.append(self.folder, mails("theirs", 1)[0], flags=[DELETED])
        super().finish(box, uids)
        if first:
            self.left_after_first = self.remote.messages(self.folder)


@pytest.mark.parametrize("limited", ["IMAP4rev1 LITERAL+ UIDPLUS"], indirect=True)
def test_without_move_only_our_message_is_expunged(
    limited: Any, sqlite_url: str, opened: list[App]
) -> None:
    box = Box(limited, Remote(limited), "INBOX", "Done")
    app = open_db(make_config(sqlite_url, box.account()), opened)
    box.remote.append_all(box.inbox, mails("ours", 2))
    worker = poller(app, ConcurrentClient)
    assert isinstance(worker, ConcurrentClient)
    worker.remote, worker.folder = box.remote, box.inbox
    assert worker.run_once() == 3
    left = worker.left_after_first
    assert left is not None and len(left) == 1  # theirs: \Deleted, yet not expunged by us
    assert DELETED in next(iter(left.values()))[0]
    # Still mail in the folder, so it is taken in next, like any other.
    assert sorted(stored(app)) == sorted([*ids("ours", 2), "theirs-0@customer.test"])
    assert box.remote.count(box.inbox) == 0
    assert box.remote.count(box.done) == 3
    box.remote.close()


@pytest.mark.parametrize("limited", ["IMAP4rev1 LITERAL+"], indirect=True)
def test_without_uidplus_mail_is_flagged_not_expunged(
    limited: Any, sqlite_url: str, opened: list[App]
) -> None:
    box = Box(limited, Remote(limited), "INBOX", "Done")
    app = open_db(make_config(sqlite_url, box.account()), opened)
    box.remote.append_all(box.inbox, mails("kept", 2))
    assert poller(app).run_once() == 2
    left = box.remote.messages(box.inbox)
    assert len(left) == 2 and all(SEEN in flags for flags, _raw in left.values())
    assert not box.remote.exists(box.done)
    assert poller(app).run_once() == 0
    box.remote.close()


@pytest.mark.parametrize("limited", ["IMAP4rev1 LITERAL+ MOVE UIDPLUS"], indirect=True)
def test_without_idle_the_account_is_polled(
    limited: Any, sqlite_url: str, opened: list[App]
) -> None:
    box = Box(limited, Remote(limited), "INBOX", "Done")
    config = make_config(sqlite_url, box.account(poll_interval=0.5))
    app = open_db(config, opened)
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        box.remote.append_all(box.inbox, mails("polled", 2))
        wait_for(lambda: box.remote.count(box.done) == 2, timeout=30)
    finally:
        daemon.stop()
    assert sorted(stored(app)) == ids("polled", 2)
    box.remote.close()


@pytest.mark.parametrize("trust", [None, False, True], ids=["default", "false", "true"])
def test_authentication_results_count_only_from_an_account_that_trusts_its_provider(
    box: Box, sqlite_url: str, opened: list[App], trust: bool | None
) -> None:
    """The provider's MTA wrote the header, or the sender did: only the admin can say."""
    values = {} if trust is None else {"trust_authentication_results": trust}
    app = open_db(make_config(sqlite_url, box.account(**values)), opened)
    box.remote.append_all(box.inbox, mails("authres", 1))
    assert poller(app).run_once() == 1
    with app.factory() as session:
        assert session.execute(select(Inbound.authres_trusted)).scalars().all() == [bool(trust)]
