"""`mailsupport outbox` and the daemon sending for real, including a kill before sending."""

from __future__ import annotations

import json
import signal
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

from _fixtures import config_data, write_config
from sink import Sink
from support import make_mail, run_cli, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(config_file: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailsupport", "-c", config_file, "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _outbox(config_file: str, *args: str) -> list[dict[str, object]]:
    result = run_cli(config_file, "outbox", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_daemon_killed_before_sending_sends_once_after_restart(
    tmp_path: Path, sqlite_url: str
) -> None:
    smtp_port, relay_port = _free_port(), _free_port()
    data = config_data(
        sqlite_url,
        smtp={"port": smtp_port},
        relay={"port": relay_port, "timeout": 2.0},
        outbound={"retry_initial_seconds": 1.0, "send_interval": 0.5},
    )
    config_file = str(write_config(tmp_path / "c.toml", data))
    daemon = _serve(config_file)
    try:
        wait_for(lambda: _listening(smtp_port), timeout=60)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("carol@customer.test", ["support@example.com"], make_mail())
        # The acknowledgement is committed but the relay is down: nothing can be sent yet.
        wait_for(lambda: len(_outbox(config_file, "--status", "pending")) == 1, timeout=30)
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    relay = Sink(relay_port).start()
    restarted = _serve(config_file)
    try:
        wait_for(lambda: len(relay.received) == 1, timeout=60)
        wait_for(lambda: _outbox(config_file)[0]["status"] == "sent", timeout=30)
        assert len(relay.to("carol@customer.test")) == 1
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=60) == 0
        relay.stop()
    assert len(relay.received) == 1


def test_outbox_list_show_retry(tmp_path: Path, sqlite_url: str) -> None:
    relay = Sink().start()
    relay.handler.refuse["carol@customer.test"] = "550 5.1.1 mailbox unavailable"
    data = config_data(sqlite_url, relay={"port": relay.port})
    config_file = str(write_config(tmp_path / "c.toml", data))
    try:
        result = run_cli(config_file, "deliver", input=make_mail())
        assert result.exit_code == 0, result.output
        [row] = _outbox(config_file)
        assert row["status"] == "pending" and row["kind"] == "acknowledgement"
        from mailsupport.app import open_app
        from mailsupport.config import load_config
        from mailsupport.outbound.sender import OutboxSender

        app = open_app(load_config(config_file))
        OutboxSender(app.factory, app.config, app.clock).send_due()
        [failed] = _outbox(config_file, "--status", "failed")
        assert failed["recipients"][0]["code"] == 550  # type: ignore[index]
        shown = run_cli(config_file, "outbox", "show", str(failed["id"]))
        assert "mailbox unavailable" in shown.stdout
        raw = run_cli(config_file, "outbox", "show", str(failed["id"]), "--raw")
        assert "Auto-Submitted: auto-replied" in raw.stdout
        del relay.handler.refuse["carol@customer.test"]
        retried = run_cli(config_file, "outbox", "retry", str(failed["id"]))
        assert retried.exit_code == 0, retried.output
        OutboxSender(app.factory, app.config, app.clock).send_due()
        app.close()
        assert _outbox(config_file)[0]["status"] == "sent"
        assert len(relay.received) == 1
        again = run_cli(config_file, "outbox", "retry", str(failed["id"]))
        assert again.exit_code == 1
        assert (
            again.output.strip() == f"Outbound mail {failed['id']} has no recipient left to retry"
        )
        missing = run_cli(config_file, "outbox", "show", "999")
        assert missing.output.strip() == "No such outbound mail: 999"
    finally:
        relay.stop()


def test_status_change_from_the_cli_queues_a_notice(tmp_path: Path, sqlite_url: str) -> None:
    data = config_data(sqlite_url, notifications={"combine_seconds": 0})
    config_file = str(write_config(tmp_path / "c.toml", data))
    assert run_cli(config_file, "deliver", input=make_mail()).exit_code == 0
    assert run_cli(config_file, "tickets", "status", "1", "waiting").exit_code == 0
    kinds = sorted(str(r["kind"]) for r in _outbox(config_file))
    assert kinds == ["acknowledgement", "status"]


def _ticket_text(config_file: str) -> str:
    result = run_cli(config_file, "tickets", "show", "1")
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def test_tickets_show_says_how_far_each_mail_we_sent_got(tmp_path: Path, sqlite_url: str) -> None:
    relay = Sink().start()
    relay.handler.refuse["dave@customer.test"] = "550 5.1.1 no such user"
    data = config_data(sqlite_url, relay={"port": relay.port}, notifications={"combine_seconds": 0})
    config_file = str(write_config(tmp_path / "c.toml", data))
    try:
        mail = make_mail(cc="dave@customer.test")
        assert run_cli(config_file, "deliver", input=mail).exit_code == 0
        assert run_cli(config_file, "tickets", "status", "1", "waiting").exit_code == 0
        text = _ticket_text(config_file)
        assert "sent by us" not in text
        assert (
            "   (acknowledgement, outbox 1: pending)\n   to carol@customer.test: pending\n" in text
        )
        from mailsupport.app import open_app
        from mailsupport.config import load_config
        from mailsupport.outbound.sender import OutboxSender

        app = open_app(load_config(config_file))
        OutboxSender(app.factory, app.config, app.clock).send_due()
        app.close()
        text = _ticket_text(config_file)
        assert "   (acknowledgement, outbox 1: sent)\n   to carol@customer.test: sent\n" in text
        assert "to dave@customer.test: failed (550 5.1.1 no such user)" in text
        shown = json.loads(run_cli(config_file, "tickets", "show", "1", "--json").stdout)
        delivered = {
            r["address"]: r["status"]
            for m in shown["messages"]
            if m["direction"] == "out"
            for r in m["delivery"]["recipients"]
        }
        assert delivered == {"carol@customer.test": "sent", "dave@customer.test": "failed"}
        assert shown["messages"][0]["delivery"] is None  # the customer's own mail
    finally:
        relay.stop()
