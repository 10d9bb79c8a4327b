"""The admin command line: tickets, operators, quarantine, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailsupport.app import App

from support import ingest, make_mail, run_cli, show_ticket


@pytest.fixture
def with_ticket(app: App, config_file: str) -> str:
    ingest(app, make_mail())
    return config_file


def test_operators_add_and_list(config_file: str) -> None:
    result = run_cli(config_file, "operators", "add", "Alice@Example.com", "--name", "Alice")
    assert result.exit_code == 0, result.output
    listed = json.loads(run_cli(config_file, "operators", "list", "--json").stdout)
    assert listed == [
        {"email": "alice@example.com", "name": "Alice", "active": True, "queues": [], "addresses": []}
    ]
    again = run_cli(config_file, "operators", "add", "alice@example.com", "--name", "Alice")
    assert again.exit_code == 1
    assert again.output.strip() == "Operator already exists: alice@example.com"


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
    ],
)
def test_mistakes_print_one_line_and_exit_1(
    with_ticket: str, args: list[str], message: str
) -> None:
    result = run_cli(with_ticket, *args)
    assert result.exit_code == 1
    assert result.output.strip() == message


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
