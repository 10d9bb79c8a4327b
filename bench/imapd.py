"""Real IMAP servers on loopback, for the tests and the IMAP benchmark.

- Dovecot (``apt-get install dovecot-imapd``), run in the foreground with a configuration of
  its own in a temporary directory: a passwd-file user, Maildir storage in that directory, no
  TLS, listening on a free port of 127.0.0.1. Nothing outside the directory is written.
- pymap (``pip install pymap``), its in-memory backend: IDLE, MOVE and UIDPLUS, one user.

Both serve one user, ``USER`` / ``PASSWORD``. ``start(kind)`` returns a running server;
``stop()`` ends it and removes its directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
USER = "support"
PASSWORD = "imap-secret"
START_TIMEOUT = 30.0
KINDS = ("pymap", "dovecot")


class Unavailable(Exception):
    """The server program is not installed here; the message says how to get it."""


@dataclass
class ImapServer:
    kind: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    host: str = HOST
    user: str = USER
    password: str = PASSWORD
    log: Path = field(default_factory=Path)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _greets(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=2) as sock:
        sock.settimeout(5)
        return sock.recv(64).startswith(b"* OK")
    return False


def _wait_until_up(server: ImapServer) -> ImapServer:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log.read_text(errors="replace") if server.log.is_file() else ""
            server.stop()
            raise RuntimeError(f"{server.kind} exited at start:\n{log[-2000:]}")
        if _greets(server.port):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.kind} did not answer on port {server.port}")


# --- pymap ------------------------------------------------------------------------------------


def start_pymap() -> ImapServer:
    if importlib.util.find_spec("pymap") is None:
        raise Unavailable("pymap is not installed (pip install -e '.[test]')")
    directory = Path(tempfile.mkdtemp(prefix="mailsupport-pymap-"))
    port = free_port()
    log = directory / "pymap.log"
    command = [
        sys.executable,
        "-c",
        "import sys; from pymap.main import main; sys.exit(main())",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-tls",
        "dict",
        "--demo-user",
        USER,
        "--demo-password",
        PASSWORD,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, cwd=directory)
    return _wait_until_up(ImapServer("pymap", port, directory, process, log=log))


# --- Dovecot ----------------------------------------------------------------------------------


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


def _accounts(directory: Path) -> tuple[str, str, int, int]:
    """Login and internal users, and the uid/gid owning the mail.

    As root, Dovecot's login processes must drop to an unprivileged user and mail may not be
    owned by uid 0: the package's own users and ``nobody`` serve. Otherwise everything runs as
    the current user.
    """
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return me, me, os.geteuid(), os.getegid()
    nobody = pwd.getpwnam("nobody")
    directory.chmod(0o755)  # the unprivileged processes must reach their sockets and the mail
    return "dovenull", "dovecot", nobody.pw_uid, nobody.pw_gid


def dovecot_config(directory: Path, port: int, capabilities: str = "") -> str:
    login_user, internal_user, uid, gid = _accounts(directory)
    mail = directory / "mail"
    mail.mkdir()
    os.chown(mail, uid, gid)
    capability_line = f"imap_capability = {capabilities}\n" if capabilities else ""
    return f"""\
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols = imap
listen = {HOST}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
mail_location = maildir:{mail}/%u
{capability_line}namespace inbox {{
  inbox = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {directory}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
  # No growing delay after a test's deliberately wrong passwords.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{_unprivileged_listeners() if os.geteuid() != 0 else ""}"""


def _unprivileged_listeners() -> str:
    """Sockets that Dovecot gives to its ``dovecot`` group by default, which a user who is not
    root cannot do: kept to the current user instead."""
    blocks = [
        ("stats", "stats-writer"),
        ("imap-hibernate", "imap-hibernate"),
        ("dict", "dict"),
        ("dict-async", "dict-async"),
    ]
    return "".join(
        f"service {service} {{\n  unix_listener {listener} {{\n    group =\n"
        f"    mode = 0600\n  }}\n}}\n"
        for service, listener in blocks
    )


def start_dovecot(capabilities: str = "") -> ImapServer:
    """Dovecot on a free port; ``capabilities`` replaces what it announces (to test fallbacks)."""
    binary = dovecot_binary()
    if binary is None:
        raise Unavailable("dovecot is not installed (apt-get install dovecot-imapd)")
    directory = Path(tempfile.mkdtemp(prefix="mailsupport-dovecot-"))
    port = free_port()
    config = directory / "dovecot.conf"
    config.write_text(dovecot_config(directory, port, capabilities))
    (directory / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    log = directory / "dovecot.log"
    with (directory / "stderr.log").open("wb") as out:
        process = subprocess.Popen([binary, "-F", "-c", str(config)], stdout=out, stderr=out)
    return _wait_until_up(ImapServer("dovecot", port, directory, process, log=log))


def start(kind: str) -> ImapServer:
    if kind == "dovecot":
        return start_dovecot()
    if kind == "pymap":
        return start_pymap()
    raise ValueError(f"unknown IMAP server kind: {kind}")
