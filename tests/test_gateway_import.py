"""The mail gateway (`mailsupport deliver`) and mbox/Maildir import, through the real CLI."""

from __future__ import annotations

import json
import mailbox
import sqlite3
import subprocess
import sys
from pathlib import Path

from _fixtures import config_data, write_config
from support import inbound, make_mail, run_cli, show_ticket


def _deliver(config_file: str, raw: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the gateway as the MTA would: a separate process, mail on standard input."""
    return subprocess.run(
        [sys.executable, "-m", "mailsupport", "-c", config_file, "deliver", *args],
        input=raw,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_deliver_exit_0_after_commit(config_file: str) -> None:
    result = _deliver(
        config_file, make_mail(), "-f", "carol@customer.test", "-r", "support@example.com"
    )
    assert result.returncode == 0, result.stderr
    ticket = show_ticket(config_file, 1)
    assert ticket["requester"] == "carol@customer.test"


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
    assert b"temporary failure" in result.stderr
    assert b"Traceback" not in result.stderr
    assert _deliver(config_file, make_mail()).returncode == 0


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
