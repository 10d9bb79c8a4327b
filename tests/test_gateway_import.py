"""The mail gateway (`mailsupport deliver`) and mbox/Maildir import, through the real CLI."""

from __future__ import annotations

import json
import mailbox
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from mailsupport.app import open_app
from mailsupport.config import load_config
from mailsupport.db.models import Event, Inbound

from _fixtures import config_data, write_config
from support import inbound, make_mail, run_cli, set_schema_revision, show_ticket


def _deliver(config_file: str, raw: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the gateway as the MTA would: a separate process, mail on standard input."""
    return subprocess.run(
        [sys.executable, "-m", "mailsupport", "-c", config_file, "deliver", *args],
        input=raw,
        capture_output=True,
        timeout=120,
        check=False,
    )


def _one_line(stderr: bytes) -> str:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, stderr.decode()
    return lines[0]


def test_deliver_exit_0_after_commit(config_file: str) -> None:
    result = _deliver(
        config_file, make_mail(), "-f", "carol@customer.test", "-r", "support@example.com"
    )
    assert result.returncode == 0, result.stderr
    ticket = show_ticket(config_file, 1)
    assert ticket["requester"] == "carol@customer.test"


def test_deliver_from_postfix_null_sender_is_the_null_sender(config_file: str) -> None:
    """Postfix's pipe passes <> as ``-f MAILER-DAEMON``: stored as <>, and never answered."""
    result = _deliver(config_file, make_mail(), "-f", "MAILER-DAEMON", "-r", "support@example.com")
    assert result.returncode == 0, result.stderr
    ticket = show_ticket(config_file, 1)
    assert [m["direction"] for m in ticket["messages"]] == ["in"]  # no acknowledgement
    app = open_app(load_config(config_file))
    try:
        with app.factory() as session:
            assert session.execute(select(Inbound.envelope_from)).scalar_one() == ""
            suppressed = session.execute(
                select(Event.data).where(Event.kind == "auto_reply_suppressed")
            ).scalar_one()
    finally:
        app.close()
    assert "null return path" in suppressed["reason"]


def test_mail_to_two_support_addresses_goes_to_the_first_whatever_postfix_delivers_first(
    config_file: str,
) -> None:
    """With a recipient limit of 1, Postfix pipes one copy per address, in no set order."""
    raw = make_mail(to="support@example.com, sales@example.com")
    for recipient in ("sales@example.com", "support@example.com"):
        result = _deliver(config_file, raw, "-f", "carol@customer.test", "-r", recipient)
        assert result.returncode == 0, result.stderr
    assert show_ticket(config_file, 1)["queue"] == "support"


def test_deliver_twice_is_one_message(config_file: str) -> None:
    raw = make_mail(message_id="<gw-twice@customer.test>")
    assert _deliver(config_file, raw).returncode == 0
    assert _deliver(config_file, raw).returncode == 0
    assert len(inbound(show_ticket(config_file, 1))) == 1


def test_deliver_exit_75_when_database_cannot_be_written(tmp_path: Path, sqlite_url: str) -> None:
    data = config_data(sqlite_url, database={"busy_timeout": 0.2})
    config_file = str(write_config(tmp_path / "c.toml", data))
    assert run_cli(config_file, "db", "upgrade").exit_code == 0
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        result = _deliver(config_file, make_mail())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert result.returncode == 75
    line = _one_line(result.stderr)
    assert line.startswith("mailsupport deliver: temporary failure: ")
    assert line.endswith("database is locked"), line
    assert _deliver(config_file, make_mail()).returncode == 0


def test_deliver_exit_75_when_the_database_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    url = f"postgresql+psycopg://mailsupport:s3cret@127.0.0.1:{port}/mailsupport"
    config_file = str(write_config(tmp_path / "c.toml", config_data(url)))
    result = _deliver(config_file, make_mail())
    assert result.returncode == 75
    assert _one_line(result.stderr) == (
        "mailsupport deliver: temporary failure: Cannot open the database "
        f"postgresql+psycopg://mailsupport:***@127.0.0.1:{port}/mailsupport (database.url): "
        f'connection failed: connection to server at "127.0.0.1", port {port} failed: '
        "Connection refused"
    )


def test_deliver_exit_75_on_empty_input(config_file: str) -> None:
    assert _deliver(config_file, b"").returncode == 75


def _write_mbox(path: Path, count: int) -> None:
    box = mailbox.mbox(path)
    for i in range(count):
        box.add(make_mail(sender=f"c{i}@customer.test", subject=f"import {i}"))
    box.flush()
    box.close()


def test_import_mbox_twice_imports_nothing_twice(tmp_path: Path, config_file: str) -> None:
    path = tmp_path / "old.mbox"
    _write_mbox(path, 7)
    first = run_cli(config_file, "import", "mbox", str(path))
    assert first.exit_code == 0, first.output
    assert "Stored 7 new, 0 already stored." in first.stdout
    second = run_cli(config_file, "import", "mbox", str(path))
    assert "Stored 0 new, 7 already stored." in second.stdout
    listing = run_cli(config_file, "tickets", "list", "--json")
    assert len(json.loads(listing.stdout)) == 7


def test_mail_imported_from_an_mbox_and_delivered_by_smtp_is_one_message(
    tmp_path: Path, config_file: str
) -> None:
    mail = make_mail(body="Hello,\nFrom now on the printer jams every day.\n")
    path = tmp_path / "old.mbox"
    box = mailbox.mbox(path)
    box.add(mail)  # written with the body line quoted: ">From now on"
    box.close()
    assert b"\n>From now on" in path.read_bytes()
    assert "Stored 1 new" in run_cli(config_file, "import", "mbox", str(path)).stdout
    assert _deliver(config_file, mail).returncode == 0
    assert len(json.loads(run_cli(config_file, "tickets", "list", "--json").stdout)) == 1


def test_import_maildir(tmp_path: Path, config_file: str) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir")
    for i in range(3):
        box.add(make_mail(sender=f"m{i}@customer.test"))
    result = run_cli(config_file, "import", "maildir", str(tmp_path / "Maildir"))
    assert "Stored 3 new" in result.stdout
    again = run_cli(config_file, "import", "maildir", str(tmp_path / "Maildir"))
    assert "Stored 0 new, 3 already stored." in again.stdout


def test_import_of_a_missing_or_wrong_path_is_one_line(tmp_path: Path, config_file: str) -> None:
    (tmp_path / "notmaildir").mkdir()
    result = run_cli(config_file, "import", "maildir", str(tmp_path / "notmaildir"))
    assert result.exit_code == 1
    assert result.output.strip().startswith("Not a Maildir")
    assert len(result.output.strip().splitlines()) == 1


def _upgraded_config(tmp_path: Path, sqlite_url: str) -> str:
    config_file = str(write_config(tmp_path / "c.toml", config_data(sqlite_url)))
    assert run_cli(config_file, "db", "upgrade").exit_code == 0
    return config_file


def test_deliver_exit_75_when_the_schema_is_newer_than_the_code(
    tmp_path: Path, sqlite_url: str
) -> None:
    """After a package rollback the mail must wait in the MTA's queue, not bounce."""
    config_file = _upgraded_config(tmp_path, sqlite_url)
    set_schema_revision(sqlite_url, "0099")
    result = _deliver(config_file, make_mail())
    assert result.returncode == 75
    line = _one_line(result.stderr)
    assert line.startswith("mailsupport deliver: temporary failure: ")
    assert "schema revision 0099, which this version of mailsupport does not know" in line
    assert line.endswith("upgrade mailsupport.")


def test_deliver_exit_75_on_any_unexpected_failure(tmp_path: Path, sqlite_url: str) -> None:
    # Two Alembic heads at once: nothing this code expects, so nothing it explains.
    config_file = _upgraded_config(tmp_path, sqlite_url)
    set_schema_revision(sqlite_url, "0004", "0005")
    result = _deliver(config_file, make_mail())
    assert result.returncode == 75
    line = _one_line(result.stderr)
    assert line.startswith("mailsupport deliver: temporary failure: CommandError: "), line


def test_deliver_exit_75_on_a_usage_mistake(config_file: str) -> None:
    """A typo in master.cf defers the mail instead of bouncing it."""
    result = _deliver(config_file, make_mail(), "--sender-address", "carol@customer.test")
    assert result.returncode == 75
    line = _one_line(result.stderr)
    assert line.startswith("mailsupport deliver: temporary failure: "), line
    assert "--sender-address" in line


NO_FROM = (
    b"To: support@example.com\r\nSubject: Printer on floor 3 is jammed\r\n"
    b"Message-ID: <no-from@example.org>\r\n\r\nThe printer is jammed again.\r\n"
)


def test_deliver_without_a_from_takes_the_envelope_sender(config_file: str) -> None:
    result = _deliver(config_file, NO_FROM, "-f", "Alice@Example.org", "-r", "support@example.com")
    assert result.returncode == 0, result.stderr
    ticket = show_ticket(config_file, 1)
    assert ticket["requester"] == "alice@example.org"
    assert inbound(ticket)[0]["from"] == "alice@example.org"
    assert json.loads(run_cli(config_file, "quarantine", "list", "--json").stdout) == []
    [stored] = json.loads(run_cli(config_file, "inbox", "list", "--json").stdout)
    assert stored["from"] == "alice@example.org"


def test_deliver_with_a_null_envelope_sender_and_no_from_is_quarantined(config_file: str) -> None:
    for sender in ("", "MAILER-DAEMON@mx.example.org"):
        raw = NO_FROM.replace(b"<no-from@", f"<{len(sender)}@".encode())
        assert _deliver(config_file, raw, "-f", sender, "-r", "support@example.com").returncode == 0
    listed = json.loads(run_cli(config_file, "quarantine", "list", "--json").stdout)
    assert len(listed) == 2
    assert json.loads(run_cli(config_file, "tickets", "list", "--json").stdout) == []


# What `deliver` must not load: each costs the MTA's pipe a share of a second per mail.
_HEAVY = ("sqlalchemy", "alembic", "mailparser", "jinja2", "apscheduler", "aiosmtpd", "logging")
_REPORT_LOADED = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('loaded:', sorted({m.split('.')[0] for m in sys.modules}"
    f" & set({_HEAVY!r})), file=sys.stderr))\n"
    "from mailsupport.cli.main import main\n"
    "main()\n"
)


def _run_reporting_imports(config_file: str, *args: str, stdin: bytes = b"") -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _REPORT_LOADED, "-c", config_file, *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.decode().splitlines() if line.startswith("loaded:")]


def test_deliver_stores_into_sqlite_without_loading_the_database_layer(
    tmp_path: Path, sqlite_url: str
) -> None:
    config_file = _upgraded_config(tmp_path, sqlite_url)
    raw = make_mail(message_id="<light@customer.test>")
    args = ("deliver", "--no-process", "-f", "carol@customer.test", "-r", "Support@Example.com")
    assert _run_reporting_imports(config_file, *args, stdin=raw) == ["loaded: []"]
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        rows = db.execute(
            "SELECT message_id, envelope_from, envelope_to, state, raw FROM inbound"
            " JOIN inbound_raw ON inbound_raw.inbound_id = inbound.id"
        ).fetchall()
    assert rows == [
        ("light@customer.test", "carol@customer.test", '["support@example.com"]', "pending", raw)
    ]


def test_commands_on_a_current_database_do_not_load_alembic(
    tmp_path: Path, sqlite_url: str
) -> None:
    config_file = _upgraded_config(tmp_path, sqlite_url)
    code = _REPORT_LOADED.replace(f"set({_HEAVY!r})", "{'alembic'}")
    result = subprocess.run(
        [sys.executable, "-c", code, "-c", config_file, "tickets", "list"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stderr.decode()


def _rows(url: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.row_factory = None
        inbound = db.execute("SELECT * FROM inbound ORDER BY id").fetchall()
        raws = db.execute("SELECT * FROM inbound_raw ORDER BY inbound_id").fetchall()
    return [*inbound, *raws]


def test_the_sqlite_gateway_stores_exactly_what_the_inbox_does(tmp_path: Path) -> None:
    """Every column as db.inbox.store_one writes it, a duplicate found as it finds one."""
    from datetime import UTC, datetime

    from mailsupport.app import open_app
    from mailsupport.config import build_config
    from mailsupport.db.inbox import RawMail, store_one
    from mailsupport.db.sqlite_store import store_if_current

    now = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
    mails = [
        RawMail(make_mail(message_id="<a@customer.test>"), "gateway", "carol\x00@customer.test"),
        RawMail(make_mail(), "gateway", None, ("support@example.com", "x@y.z")),
        RawMail(make_mail(message_id="<a@customer.test>"), "gateway", "again@customer.test"),
        RawMail(make_mail(message_id="<b@customer.test>"), "gateway", authres_trusted=True),
    ]
    urls = [f"sqlite:///{tmp_path / name}" for name in ("orm.db", "sqlite3.db")]
    for url in urls:
        open_app(build_config({"database": {"url": url}}, env={}), migrate=True).close()
    app = open_app(build_config({"database": {"url": urls[0]}}, env={}))
    try:
        for mail in mails:
            with app.factory.begin() as session:
                expected = store_one(session, mail, now)
            assert store_if_current(urls[1], 5.0, mail, now) == expected
    finally:
        app.close()
    assert _rows(urls[1]) == _rows(urls[0])
    assert len(_rows(urls[0])) == 6  # three mails and their bytes; the third was a duplicate


def test_the_sqlite_gateway_leaves_a_database_it_cannot_vouch_for_to_the_full_path(
    tmp_path: Path, sqlite_url: str
) -> None:
    from datetime import UTC, datetime

    from mailsupport.db.inbox import RawMail
    from mailsupport.db.sqlite_store import store_if_current

    mail, now = RawMail(make_mail(), "gateway"), datetime.now(UTC)
    assert store_if_current(sqlite_url, 5.0, mail, now) is None  # no file yet
    _upgraded_config(tmp_path, sqlite_url)
    assert store_if_current(f"{sqlite_url}?mode=ro", 5.0, mail, now) is None  # only SQLAlchemy
    set_schema_revision(sqlite_url, "0004")
    assert store_if_current(sqlite_url, 5.0, mail, now) is None  # an upgrade is due
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        assert db.execute("SELECT count(*) FROM inbound").fetchone() == (0,)


def test_deliver_into_a_current_sqlite_database_processes_the_mail_too(
    tmp_path: Path, sqlite_url: str
) -> None:
    config_file = _upgraded_config(tmp_path, sqlite_url)
    result = _deliver(config_file, make_mail(), "-f", "carol@customer.test")
    assert result.returncode == 0, result.stderr
    assert show_ticket(config_file, 1)["requester"] == "carol@customer.test"


def test_a_relative_database_path_that_cannot_be_opened_names_the_directory(
    tmp_path: Path,
) -> None:
    """An MTA runs the gateway in a directory of its own: the error must say which."""
    data = config_data("sqlite:///missing/mailsupport.db")
    config_file = str(write_config(tmp_path / "c.toml", data))
    result = subprocess.run(
        [sys.executable, "-m", "mailsupport", "-c", config_file, "deliver"],
        input=make_mail(),
        capture_output=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 75
    assert _one_line(result.stderr) == (
        "mailsupport deliver: temporary failure: Cannot open the database "
        f"sqlite:///missing/mailsupport.db (database.url, relative to {tmp_path}): "
        "unable to open database file"
    )


def test_two_mails_without_headers_are_two_messages_each_quarantined(config_file: str) -> None:
    """Neither has a header block: their keys were once the same, and the second was dropped
    with exit 0 as a duplicate. A real second delivery of one of them is still one message."""
    first = b"Hello,\nthe printer on floor 3 is jammed.\n"
    second = b"Hello,\nthe scanner on floor 2 is broken.\n"
    for raw in (first, second, first):
        result = _deliver(config_file, raw, "-f", "", "-r", "support@example.com")
        assert result.returncode == 0, result.stderr
    listed = json.loads(run_cli(config_file, "quarantine", "list", "--json").stdout)
    assert len(listed) == 2
    assert all("From" in entry["reason"] for entry in listed), listed
    app = open_app(load_config(config_file))
    try:
        with app.factory() as session:
            sizes = session.execute(select(Inbound.size).order_by(Inbound.id)).scalars().all()
    finally:
        app.close()
    assert sizes == [len(first), len(second)]


def test_headers_after_one_written_with_a_space_before_its_colon_are_kept(
    config_file: str,
) -> None:
    raw = (
        b"Subject : Printer on floor 3 is jammed\r\nFrom: Ann <ann@customer.test>\r\n"
        b"To: support@example.com\r\nMessage-ID: <spaced@customer.test>\r\n\r\nIt is jammed.\r\n"
    )
    result = _deliver(config_file, raw, "-f", "", "-r", "support@example.com")
    assert result.returncode == 0, result.stderr
    assert json.loads(run_cli(config_file, "quarantine", "list", "--json").stdout) == []
    ticket = show_ticket(config_file, 1)
    assert ticket["requester"] == "ann@customer.test"
    assert ticket["subject"] == "Printer on floor 3 is jammed"


def test_authentication_results_on_mail_from_the_gateway_prove_an_operator(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The MTA runs the gateway, so the topmost Authentication-Results header is its own."""
    data = config_data(sqlite_url, support={"trusted_authserv_id": "mx.example.com"})
    config_file = str(write_config(tmp_path / "c.toml", data))
    assert run_cli(config_file, "db", "upgrade").exit_code == 0
    added = run_cli(config_file, "operators", "add", "alice@example.com", "--name", "Alice")
    assert added.exit_code == 0, added.output
    first = make_mail(message_id="<problem@customer.test>")
    assert _deliver(config_file, first, "-f", "carol@customer.test").returncode == 0
    answer = make_mail(
        sender="alice@example.com",
        subject="Re: [ACME #1] x",
        body="#status waiting\n\nA photo, please.",
        in_reply_to="<problem@customer.test>",
        headers={"Authentication-Results": "mx.example.com; dkim=pass header.d=example.com"},
    )
    result = _deliver(config_file, answer, "-f", "alice@example.com")
    assert result.returncode == 0, result.stderr
    assert show_ticket(config_file, 1)["status"] == "waiting"
