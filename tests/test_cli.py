"""The admin command line: tickets, operators, quarantine, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import make_url, select

from mailsupport.app import App
from mailsupport.db.models import Event

from _fixtures import PG_ENV, config_data, write_config
from support import ingest, make_mail, run_cli, set_schema_revision, show_ticket, wait_for


@pytest.fixture
def with_ticket(app: App, config_file: str) -> str:
    ingest(app, make_mail())
    return config_file


def test_operators_add_and_list(config_file: str) -> None:
    result = run_cli(config_file, "operators", "add", "Alice@Example.com", "--name", "Alice")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "Added operator Alice <alice@example.com> in queue support "
        "(the default queue; --queue chooses others)"
    )
    listed = json.loads(run_cli(config_file, "operators", "list", "--json").stdout)
    assert listed == [
        {
            "email": "alice@example.com",
            "name": "Alice",
            "active": True,
            "queues": ["support"],
            "addresses": [],
        }
    ]
    again = run_cli(config_file, "operators", "add", "alice@example.com", "--name", "Alice")
    assert again.exit_code == 1
    assert again.output.strip() == "Operator already exists: alice@example.com"


def _queues_of(config_file: str, email: str) -> list[str]:
    listed = json.loads(run_cli(config_file, "operators", "list", "--json").stdout)
    return next(o["queues"] for o in listed if o["email"] == email)


def test_configured_queues_exist_before_any_mail(tmp_path: Path, sqlite_url: str) -> None:
    data = config_data(sqlite_url, support={"default_queue": "helpdesk"})
    data["imap"] = {"name": "main", "host": "imap.test", "username": "u", "queue": "billing"}
    path = write_config(tmp_path / "c.toml", data)
    path.write_text(path.read_text().replace("[imap]", "[[imap]]"))
    config_file = str(path)
    added = run_cli(config_file, "operators", "add", "bob@example.com", "--name", "Bob")
    assert "in queue helpdesk (the default queue" in added.output
    for queue in ("sales", "billing"):
        result = run_cli(config_file, "operators", "queue", "add", "bob", queue)
        assert (result.exit_code, result.output.strip()) == (0, f"bob@example.com works in {queue}")
    assert _queues_of(config_file, "bob@example.com") == ["billing", "helpdesk", "sales"]


def test_an_unknown_queue_is_refused_unless_created(config_file: str) -> None:
    run_cli(config_file, "operators", "add", "bob@example.com", "--name", "Bob")
    typo = run_cli(config_file, "operators", "queue", "add", "bob", "no-such-typo")
    assert (typo.exit_code, typo.output.strip()) == (
        1,
        "No such queue: no-such-typo (queues: sales, support); --create makes a new one",
    )
    added = run_cli(
        config_file, "operators", "add", "eve@example.com", "--name", "E", "--queue", "slaes"
    )
    assert (added.exit_code, added.output.strip()) == (
        1,
        "No such queue: slaes (queues: sales, support); --create makes a new one",
    )
    listed = json.loads(run_cli(config_file, "operators", "list", "--json").stdout)
    assert [o["email"] for o in listed] == ["bob@example.com"]  # eve was not added
    made = run_cli(config_file, "operators", "queue", "add", "bob", "Night-Shift", "--create")
    assert (made.exit_code, made.output.strip()) == (0, "bob@example.com works in night-shift")
    both = run_cli(
        config_file,
        "operators",
        "add",
        "eve@example.com",
        "--name",
        "E",
        "--queue",
        "vip",
        "--queue",
        "sales",
        "--create",
    )
    assert both.output.strip() == "Added operator E <eve@example.com> in queues sales, vip"
    assert _queues_of(config_file, "eve@example.com") == ["sales", "vip"]
    bad = run_cli(config_file, "operators", "queue", "add", "bob", "two words", "--create")
    assert bad.exit_code == 1 and bad.output.startswith("Not a queue name: 'two words'")


def test_configured_queues_are_only_read_once_they_exist(tmp_path: Path, sqlite_url: str) -> None:
    """Every command and every start checks them; that must not wait for the write lock."""
    import sqlite3

    from mailsupport.app import open_app, prepare_queues
    from mailsupport.config import build_config
    from mailsupport.db.models import Queue

    config = build_config(config_data(sqlite_url, database={"busy_timeout": 0.2}), env={})
    app = open_app(config, migrate=True)
    try:
        prepare_queues(app)
        with app.factory() as session:
            assert sorted(session.execute(select(Queue.name)).scalars()) == ["sales", "support"]
        blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            prepare_queues(app)  # would time out waiting for the lock, were it to write
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    finally:
        app.close()


def test_assign_and_status(with_ticket: str) -> None:
    config_file = with_ticket
    run_cli(config_file, "operators", "add", "alice@example.com", "--name", "Alice")
    assert run_cli(config_file, "tickets", "assign", "1", "alice").exit_code == 0
    assert run_cli(config_file, "tickets", "status", "1", "waiting").exit_code == 0
    assert run_cli(config_file, "tickets", "priority", "1", "high").exit_code == 0
    data = show_ticket(config_file, 1)
    assert (data["assignee"], data["status"], data["priority"]) == (
        "alice@example.com",
        "waiting",
        "high",
    )
    waiting = json.loads(
        run_cli(config_file, "tickets", "list", "--status", "waiting", "--json").stdout
    )
    assert [t["number"] for t in waiting] == [1]
    assert (
        json.loads(run_cli(config_file, "tickets", "list", "--status", "new", "--json").stdout)
        == []
    )


def test_status_change_is_an_event_with_actor(with_ticket: str, app: App) -> None:
    from sqlalchemy import select

    from mailsupport.db.models import Event

    assert run_cli(with_ticket, "tickets", "status", "1", "resolved").exit_code == 0
    with app.factory() as session:
        event = session.execute(select(Event).where(Event.kind == "status")).scalar_one()
    assert (event.old, event.new) == ("new", "resolved")
    assert event.actor.startswith("cli:")


def test_show_json_has_the_documented_fields(with_ticket: str) -> None:
    data = show_ticket(with_ticket, 1)
    for key in (
        "number",
        "subject",
        "status",
        "priority",
        "queue",
        "requester",
        "assignee",
        "participants",
        "messages",
    ):
        assert key in data
    message = data["messages"][0]
    for key in (
        "message_id",
        "from",
        "date",
        "direction",
        "internal",
        "text",
        "attachments",
        "thread_reason",
    ):
        assert key in message
    assert message["from"] == "carol@customer.test"
    assert message["internal"] is False


def test_show_text(with_ticket: str) -> None:
    result = run_cli(with_ticket, "tickets", "show", "1")
    assert result.exit_code == 0
    assert "Ticket #1: Printer on floor 3 is jammed" in result.stdout
    assert "the printer is jammed again." in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tickets", "show", "42"], "No such ticket: 42"),
        (
            ["tickets", "status", "1", "done"],
            "Unknown status: done (one of new, open, waiting, resolved, closed)",
        ),
        (["tickets", "assign", "1", "nobody"], "No such operator: nobody"),
        (
            ["tickets", "priority", "1", "meh"],
            "Unknown priority: meh (one of low, normal, high, urgent)",
        ),
        (["operators", "add", "not-an-email", "--name", "X"], "Not an email address: not-an-email"),
        (["quarantine", "show", "999"], "No such stored message: 999"),
        (["quarantine", "replay", "1"], "Message 1 is not quarantined (it is processed)"),
        (["participants", "add", "42", "dave@customer.test"], "No such ticket: 42"),
        (["participants", "add", "1", "dave"], "Not an email address: dave"),
        (
            ["participants", "add", "1", "Support+x@example.com"],
            "support+x@example.com is an address of mailsupport's own (support.address)",
        ),
        (
            ["participants", "remove", "1", "carol@customer.test"],
            "carol@customer.test is the requester of ticket #1",
        ),
        (
            ["participants", "remove", "1", "erin@customer.test"],
            "erin@customer.test does not take part in ticket #1",
        ),
    ],
)
def test_mistakes_print_one_line_and_exit_1(
    with_ticket: str, args: list[str], message: str
) -> None:
    result = run_cli(with_ticket, *args)
    assert result.exit_code == 1
    assert result.output.strip() == message


def test_participants_add_and_remove(app: App, with_ticket: str) -> None:
    def people() -> dict[str, str]:
        return {p["email"]: p["role"] for p in show_ticket(with_ticket, 1)["participants"]}

    added = run_cli(with_ticket, "participants", "add", "1", "Erin@Customer.test", "--name", "Erin")
    assert (added.exit_code, added.output) == (0, "Added ticket #1: erin@customer.test\n")
    assert people()["erin@customer.test"] == "cc"
    again = run_cli(with_ticket, "participants", "add", "1", "erin@customer.test")
    assert again.output == "Already on ticket #1: erin@customer.test\n"
    removed = run_cli(with_ticket, "participants", "remove", "1", "erin@customer.test")
    assert (removed.exit_code, removed.output) == (
        0,
        "Removed from ticket #1: erin@customer.test\n",
    )
    assert "erin@customer.test" not in people()
    with app.factory() as session:
        kinds = [
            (e.kind, e.new or e.old)
            for e in session.execute(select(Event).order_by(Event.id)).scalars()
            if e.kind in ("participant", "participant_removed")
        ]
    assert kinds[-2:] == [
        ("participant", "erin@customer.test"),
        ("participant_removed", "erin@customer.test"),
    ]


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp]\nport = 'twenty-five'\n")
    result = run_cli(str(bad), "tickets", "list")
    assert result.exit_code == 1
    assert result.output.strip() == "Invalid config: smtp.port must be an integer from 0 to 65535."


def test_quarantine_list_show_replay(app: App, config_file: str) -> None:
    no_from = (
        b"To: support@example.com\r\nSubject: who am I\r\nMessage-ID: <anon@x.test>\r\n\r\nhi\r\n"
    )
    outcome = ingest(app, no_from)
    assert outcome.state == "quarantined"
    assert "From" in outcome.detail
    listed = json.loads(run_cli(config_file, "quarantine", "list", "--json").stdout)
    assert [(r["id"], r["message_id"]) for r in listed] == [(outcome.inbound_id, "anon@x.test")]
    shown = run_cli(config_file, "quarantine", "show", str(outcome.inbound_id))
    assert "no usable From address" in shown.stdout
    raw = run_cli(config_file, "quarantine", "show", str(outcome.inbound_id), "--raw")
    assert raw.stdout_bytes == no_from
    again = run_cli(config_file, "quarantine", "replay", str(outcome.inbound_id))
    assert again.exit_code == 1  # still no From: quarantined again, with its reason
    assert "quarantined" in again.stdout


def test_quarantine_list_marks_a_message_without_message_id(app: App, config_file: str) -> None:
    outcome = ingest(app, b"To: support@example.com\r\nSubject: anonymous\r\n\r\nhi\r\n")
    assert outcome.state == "quarantined"
    listed = run_cli(config_file, "quarantine", "list").stdout
    assert f"{outcome.inbound_id:<8} " in listed and "  -  unusable:" in listed, listed
    assert "<>" not in listed


def test_replay_processes_a_quarantined_message(app: App, config_file: str) -> None:
    from mailsupport.db.inbox import RawMail, store_one
    from mailsupport.db.models import Inbound, InboundState

    with app.factory.begin() as session:
        stored = store_one(session, RawMail(make_mail(), "smtp"), app.clock.now())
        row = session.get(Inbound, stored.inbound_id)
        assert row is not None
        row.state = InboundState.QUARANTINED
        row.quarantine_reason = "RuntimeError: simulated failure of an earlier version"
    result = run_cli(config_file, "quarantine", "replay", str(stored.inbound_id))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{stored.inbound_id}: processed: ticket #1")
    assert json.loads(run_cli(config_file, "quarantine", "list", "--json").stdout) == []


UNKNOWN_REVISION = (
    "The database is at schema revision 0099, which this version of mailsupport does not know: "
    "upgrade mailsupport."
)


@pytest.mark.parametrize("args", [["tickets", "list"], ["db", "upgrade"], ["operators", "list"]])
def test_a_schema_newer_than_the_code_is_one_line(
    tmp_path: Path, sqlite_url: str, args: list[str]
) -> None:
    config_file = str(write_config(tmp_path / "c.toml", config_data(sqlite_url)))
    assert run_cli(config_file, "db", "upgrade").exit_code == 0
    set_schema_revision(sqlite_url, "0099")
    result = run_cli(config_file, *args)
    assert (result.exit_code, result.output.strip()) == (1, UNKNOWN_REVISION)


def test_db_status_tells_a_schema_newer_than_the_code(tmp_path: Path, sqlite_url: str) -> None:
    config_file = str(write_config(tmp_path / "c.toml", config_data(sqlite_url)))
    assert run_cli(config_file, "db", "upgrade").exit_code == 0
    set_schema_revision(sqlite_url, "0099")
    result = run_cli(config_file, "db", "status")
    assert "upgrade mailsupport" in result.output
    assert "needs `mailsupport db upgrade`" not in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unreachable_databases() -> list[tuple[str, str]]:
    """(database.url, what the driver says) for databases that cannot be opened."""
    cases = [
        (
            f"postgresql+psycopg://mailsupport:s3cret@127.0.0.1:{_free_port()}/mailsupport",
            "Connection refused",
        ),
        ("sqlite:////nonexistent-directory/mailsupport.db", "unable to open database file"),
    ]
    server = os.environ.get(PG_ENV)
    if server:
        missing = make_url(server).set(database="ms_no_such_database", password="s3cret")
        cases.append((missing.render_as_string(hide_password=False), "does not exist"))
    return cases


@pytest.mark.parametrize(
    "args", [["tickets", "list"], ["db", "status"], ["db", "upgrade"], ["outbox", "list"]]
)
def test_a_database_that_cannot_be_opened_is_one_line(tmp_path: Path, args: list[str]) -> None:
    for url, cause in _unreachable_databases():
        config_file = str(write_config(tmp_path / "c.toml", config_data(url)))
        result = run_cli(config_file, *args)
        shown = make_url(url).render_as_string(hide_password=True)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Cannot open the database {shown} (database.url): ")
        assert cause in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert "s3cret" not in result.output


# The daemon's log as it starts and stops, warnings included (the scheduler may report a run
# it skipped); anything else ``serve`` prints, an error record or a traceback, is counted.
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) ")


def _serve_until_it_gives_up(config_file: str) -> tuple[int, str]:
    """Run ``serve`` in a session of its own; its exit status and standard error.

    Its pipeline workers are in its process group: none may outlive it.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailsupport", "-c", config_file, "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - started < 20, "serve took too long to give up"
    # multiprocessing's resource tracker ends on its own once its parent is gone.
    wait_for(lambda: not _running_in_group(process.pid), timeout=10)
    return process.returncode, stderr


def _not_logged(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not _LOG_RECORD.match(line)]


def _running_in_group(pgid: int) -> list[str]:
    """The processes of a process group that still run (exited ones wait for init to reap)."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            running.append(stat.parent.name)
    return running


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path, sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = config_data(sqlite_url, smtp={"host": "127.0.0.1", "port": port})
        code, stderr = _serve_until_it_gives_up(str(write_config(tmp_path / "c.toml", data)))
    assert code == 1
    assert _not_logged(stderr) == [
        f"Cannot listen on 127.0.0.1:{port} (smtp.host/smtp.port): address already in use"
    ]


def test_serve_on_a_host_that_does_not_resolve_is_one_line(tmp_path: Path, sqlite_url: str) -> None:
    data = config_data(sqlite_url, smtp={"host": "no-such-host.invalid", "port": 2525})
    code, stderr = _serve_until_it_gives_up(str(write_config(tmp_path / "c.toml", data)))
    lines = _not_logged(stderr)
    assert code == 1
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Cannot listen on no-such-host.invalid:2525 (smtp.host): "), stderr


def test_serve_on_a_schema_newer_than_the_code_is_one_line(tmp_path: Path, sqlite_url: str) -> None:
    config_file = str(write_config(tmp_path / "c.toml", config_data(sqlite_url)))
    assert run_cli(config_file, "db", "upgrade").exit_code == 0
    set_schema_revision(sqlite_url, "0099")
    code, stderr = _serve_until_it_gives_up(config_file)
    assert (code, _not_logged(stderr)) == (1, [UNKNOWN_REVISION])


def test_serve_on_an_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql+psycopg://mailsupport:s3cret@127.0.0.1:{_free_port()}/mailsupport"
    code, stderr = _serve_until_it_gives_up(
        str(write_config(tmp_path / "c.toml", config_data(url)))
    )
    lines = _not_logged(stderr)
    assert code == 1
    assert len(lines) == 1 and "(database.url)" in lines[0], stderr
    assert "s3cret" not in stderr


# Past the signed 64-bit integers that SQLite and PostgreSQL store ids and ticket numbers in.
_TOO_BIG = [str(2**63), "99999999999999999999"]


@pytest.mark.parametrize("number", _TOO_BIG)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tickets", "show", "{}"], "No such ticket: {}"),
        (["tickets", "assign", "{}", "alice"], "No such ticket: {}"),
        (["tickets", "status", "{}", "open"], "No such ticket: {}"),
        (["tickets", "priority", "{}", "high"], "No such ticket: {}"),
        (["quarantine", "show", "{}"], "No such stored message: {}"),
        (["quarantine", "replay", "{}"], "No such stored message: {}"),
        (["outbox", "show", "{}"], "No such outbound mail: {}"),
        (["outbox", "retry", "{}"], "No such outbound mail: {}"),
    ],
)
def test_a_number_out_of_range_is_not_found(
    with_ticket: str, args: list[str], message: str, number: str
) -> None:
    result = run_cli(with_ticket, *(arg.format(number) for arg in args))
    assert (result.exit_code, result.output.strip()) == (1, message.format(number))


@pytest.fixture
def with_own_addresses(tmp_path: Path, sqlite_url: str) -> str:
    """Every kind of address mailsupport receives mail at, configured."""
    data = config_data(sqlite_url, support={"comment_address": "support-comment@example.com"})
    data["imap"] = {"name": "gmail", "host": "imap.gmail.test", "username": "acme.help@gmail.test"}
    path = write_config(tmp_path / "c.toml", data)
    # write_config knows tables only; [[imap]] is an array of tables.
    path.write_text(path.read_text().replace("[imap]", "[[imap]]"))
    return str(path)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("support@example.com", "support.address"),
        ("Support+alice@Example.com", "support.address"),
        ("sales@example.com", "queues.sales@example.com"),
        ("support-comment@example.com", "support.comment_address"),
        ("acme.help@gmail.test", "imap[0].address"),
    ],
)
def test_an_operator_cannot_have_one_of_our_addresses(
    with_own_addresses: str, address: str, key: str
) -> None:
    expected = (
        f"{address.lower()} is an address of mailsupport's own ({key}): "
        "mail to the operator would come back to it"
    )
    added = run_cli(with_own_addresses, "operators", "add", address, "--name", "X")
    assert (added.exit_code, added.output.strip()) == (1, expected)
    alice = run_cli(with_own_addresses, "operators", "add", "alice@example.com", "--name", "A")
    assert alice.exit_code == 0, alice.output
    also = run_cli(with_own_addresses, "operators", "address", "add", "alice", address)
    assert (also.exit_code, also.output.strip()) == (1, expected)
    listed = json.loads(run_cli(with_own_addresses, "operators", "list", "--json").stdout)
    assert [(o["email"], o["addresses"]) for o in listed] == [("alice@example.com", [])]


def test_showing_commands_do_not_wait_for_the_write_lock(tmp_path: Path, sqlite_url: str) -> None:
    """The pipeline may hold SQLite's write lock for a batch; reading must not queue for it."""
    import sqlite3

    from mailsupport.app import open_app
    from mailsupport.config import build_config

    data = config_data(sqlite_url, database={"busy_timeout": 0.2})
    app = open_app(build_config(data, env={}), migrate=True)
    try:
        ingest(app, make_mail())
    finally:
        app.close()
    config_file = str(write_config(tmp_path / "short.toml", data))
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # a writer in the middle of its transaction
    try:
        for command in (
            ["tickets", "show", "1", "--json"],
            ["tickets", "list"],
            ["quarantine", "list"],
            ["inbox", "list"],
            ["outbox", "list"],
            ["operators", "list"],
        ):
            result = run_cli(config_file, *command)
            assert result.exit_code == 0, (command, result.output)
        assert run_cli(config_file, "tickets", "status", "1", "open").exit_code == 1  # a writer
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
