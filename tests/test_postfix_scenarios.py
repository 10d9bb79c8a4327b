"""Mail as Postfix hands it over, through the real daemon, with a relay sink catching our mail.

The daemon runs its listener, its pipeline worker and its outbox sender; Postfix's pipe is
played by ``mailsupport deliver`` in a process of its own. That nothing was sent is shown with
a later mail whose answer does arrive: the outbox sends in the order mail was queued, so an
answer to the earlier mail would have arrived first.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailsupport.config import Config, build_config
from mailsupport.daemon import Daemon

from _fixtures import config_data, write_config
from sink import Sink
from support import make_mail, run_cli, show_ticket, wait_for

CAROL = "carol@customer.test"
ALICE = "alice@example.com"
SERVICENOW = "instance@service-now.example"


@dataclass
class Running:
    daemon: Daemon
    config: Config
    config_file: str
    relay: Sink


def _daemon_config(sqlite_url: str, relay: Sink, **sections: dict[str, Any]) -> dict[str, Any]:
    data = config_data(
        sqlite_url,
        relay={"port": relay.port, "timeout": 10.0},
        # The gateway's processing happens in its own process: the daemon's sender finds the
        # mail it queued by looking, so it looks often.
        outbound={"send_interval": 0.2},
        notifications={"combine_seconds": 0},
    )
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


@pytest.fixture
def running(tmp_path: Path, sqlite_url: str, relay: Sink) -> Iterator[Running]:
    data = _daemon_config(sqlite_url, relay)
    config = build_config(data, env={})
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        yield Running(daemon, config, str(write_config(tmp_path / "c.toml", data)), relay)
    finally:
        daemon.stop()


def _pipe(config_file: str, raw: bytes, *args: str) -> None:
    """Postfix's pipe(8): the gateway in a process of its own, the mail on standard input."""
    result = subprocess.run(
        [sys.executable, "-m", "mailsupport", "-c", config_file, "deliver", *args],
        input=raw,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()


def _acknowledged(relay: Sink, address: str) -> bool:
    return any("[ACME #" in r.message["Subject"] for r in relay.to(address))


def test_mail_piped_with_the_null_sender_gets_no_acknowledgement(running: Running) -> None:
    """Postfix passes <> as ``-f MAILER-DAEMON``, or as ``-f ""`` with ``null_sender=``."""
    for sender, envelope in ((CAROL, "MAILER-DAEMON"), ("erin@customer.test", "")):
        _pipe(
            running.config_file,
            make_mail(sender=sender),
            *("-f", envelope, "-r", "support@example.com"),
        )
    _pipe(
        running.config_file,
        make_mail(sender="dave@customer.test"),
        *("-f", "dave@customer.test", "-r", "support@example.com"),
    )
    wait_for(lambda: _acknowledged(running.relay, "dave@customer.test"), timeout=60)
    assert running.relay.to(CAROL) == []
    assert running.relay.to("erin@customer.test") == []
    # Both are kept as tickets all the same.
    assert show_ticket(running.config_file, 1)["requester"] == CAROL
    assert show_ticket(running.config_file, 2)["requester"] == "erin@customer.test"


def _smtp(running: Running, sender: str, raw: bytes, to: str = "support@example.com") -> None:
    """Postfix relaying to the daemon's listener."""
    assert running.daemon.smtp_address is not None
    with smtplib.SMTP(*running.daemon.smtp_address, timeout=30) as client:
        client.sendmail(sender, [to], raw)


def _inbox(config_file: str, outcome: str) -> list[dict[str, Any]]:
    result = run_cli(config_file, "inbox", "list", "--json", "--outcome", outcome)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_an_incident_notice_opens_a_ticket_and_an_absence_notice_is_listed(
    running: Running,
) -> None:
    added = run_cli(
        running.config_file, "operators", "add", ALICE, "--name", "Alice", "--queue", "support"
    )
    assert added.exit_code == 0, added.output
    incident = make_mail(
        sender=f"ServiceNow <{SERVICENOW}>",
        subject="Incident INC0012345 has been assigned to your group",
        message_id="<inc0012345@service-now.example>",
        headers={"Auto-Submitted": "auto-generated", "Precedence": "bulk"},
    )
    _smtp(running, SERVICENOW, incident)
    [told] = wait_for(lambda: running.relay.to(ALICE), timeout=60)
    assert told.message["Subject"].startswith("[ACME #1]")
    assert running.relay.to(SERVICENOW) == []  # the ticket system gets nothing back
    [row] = _inbox(running.config_file, "ticket")
    assert (row["message_id"], row["from"], row["ticket"]) == (
        "inc0012345@service-now.example",
        SERVICENOW,
        1,
    )

    away = make_mail(
        sender="bob@customer.test",
        subject="Out of office: Quarterly report",
        message_id="<away@customer.test>",
        headers={"Auto-Submitted": "auto-replied"},
    )
    _smtp(running, "", away)
    [dropped] = wait_for(lambda: _inbox(running.config_file, "dropped"), timeout=60)
    assert dropped["message_id"] == "away@customer.test"
    assert dropped["reason"].startswith("automatic reply matching no ticket (")
    assert dropped["ticket"] is None


def _gave_up(bounce_address: str, recipient: str, message_id: str, n: int) -> bytes:
    """Postfix's report once its queue lifetime is over: "Action: failed" with a 4.x.x."""
    return (
        f"From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\r\nTo: {bounce_address}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <gave-up-{n}@mx.example.com>\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; "
        'boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        "This is the mail system at host mx.example.com.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n"
        f"\r\nFinal-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
        "Action: failed\r\nStatus: 4.4.1\r\n"
        "Diagnostic-Code: X-Postfix; connect to mx.customer.test[192.0.2.7]:25: Connection"
        " timed out\r\n\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{message_id}>\r\n"
        "\r\n--b--\r\n"
    ).encode()


def _undeliverable(relay: Sink, address: str) -> list[Any]:
    return [r for r in relay.to(address) if "Undeliverable:" in r.message["Subject"]]


def test_a_report_that_postfix_gave_up_is_final_and_told_once(running: Running) -> None:
    added = run_cli(
        running.config_file, "operators", "add", ALICE, "--name", "Alice", "--queue", "support"
    )
    assert added.exit_code == 0, added.output
    _smtp(running, CAROL, make_mail())
    [ack] = wait_for(lambda: running.relay.to(CAROL), timeout=60)
    message_id = ack.message["Message-ID"].strip("<>")
    # Postfix accepted the acknowledgement, tried for days, and gave up: its report comes back
    # to the signed bounce address, with the null sender.
    _smtp(running, "", _gave_up(ack.mail_from, CAROL, message_id, 1), to=ack.mail_from)
    [told] = wait_for(lambda: _undeliverable(running.relay, ALICE), timeout=60)
    body = told.message.get_body(("plain",)).get_content()
    assert f"{CAROL}: bounced: 4.4.1 connect to mx.customer.test" in body
    shown = run_cli(running.config_file, "outbox", "list", "--json")
    statuses = {
        r["address"]: r["status"] for row in json.loads(shown.stdout) for r in row["recipients"]
    }
    assert statuses[CAROL] == "bounced"

    _smtp(running, "", _gave_up(ack.mail_from, CAROL, message_id, 2), to=ack.mail_from)
    _smtp(running, "dave@customer.test", make_mail(sender="dave@customer.test"))
    # Dave's ticket is told to Alice after anything the second report could have caused.
    wait_for(
        lambda: any(r.message["Subject"].startswith("[ACME #2]") for r in running.relay.to(ALICE)),
        timeout=60,
    )
    assert len(_undeliverable(running.relay, ALICE)) == 1
    assert len(running.relay.to(CAROL)) == 1  # and a report is never answered
