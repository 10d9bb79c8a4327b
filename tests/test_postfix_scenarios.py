"""Mail as Postfix hands it over, through the real daemon, with a relay sink catching our mail.

The daemon runs its listener, its pipeline worker and its outbox sender; Postfix's pipe is
played by ``mailsupport deliver`` in a process of its own. That nothing was sent is shown with
a later mail whose answer does arrive: the outbox sends in the order mail was queued, so an
answer to the earlier mail would have arrived first.
"""

from __future__ import annotations

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
from support import make_mail, show_ticket, wait_for

CAROL = "carol@customer.test"


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
