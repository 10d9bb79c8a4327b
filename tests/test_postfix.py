"""The README's Postfix recipes, as written there, against a real Postfix (where installed).

Each test starts a Postfix instance of its own (`postfix -c DIR start`: its own main.cf and
master.cf, queue and data directories in a temporary directory, smtpd on a free loopback
port) whose recipe lines are read from README.md's marked blocks, with only the port and the
paths changed, then sends mail through it by SMTP and finds it in our database. Postfix runs
as root; `.ci/run` installs it (and creates the pipe's `mailsupport` user). Without Postfix, or
not as root, these tests are skipped, saying why; under CI (``CI=true``), which must run the
recipes, they fail instead.

The pipe runs the gateway as the `mailsupport` user, who cannot be counted on to read this
checkout (CI may clone it into a folder only root can enter) nor the interpreter running the
tests (a pyenv under /root). So the test installs the command where that user can read it: a
folder of its own under /tmp holding a copy of the package and of what `deliver` imports
(click, and the standard library's sqlite3), run by the system's /usr/bin/python3, or where
that is older than the package allows, by a copy of this interpreter without its packages.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click
import pytest

import mailsupport
from mailsupport.config import build_config
from mailsupport.daemon import Daemon

from _fixtures import config_data, write_config
from sink import Sink
from support import make_mail, run_cli, show_ticket, wait_for

README = Path(__file__).resolve().parent.parent / "README.md"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
PIPE_USER = "mailsupport"  # as the README's master.cf line and its useradd have it

# The services a Postfix instance needs, none chrooted (its queue is a temporary directory).
_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.mailsupport.test
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
"""


def _unavailable(reason: str) -> NoReturn:
    """Skip, saying why; in CI, which is there to run the recipes, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the README's Postfix recipes")
    pytest.skip(reason)


def _require_postfix() -> None:
    if not os.path.exists(POSTFIX):
        _unavailable("Postfix is not installed (apt-get install postfix; .ci/run installs it)")
    if os.geteuid() != 0:
        _unavailable("a Postfix instance of its own must be started as root")
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        _unavailable("no 'postfix' user: Postfix's package is not set up")


def readme_block(marker: str) -> str:
    """The fenced block that follows ``<!-- marker -->`` in README.md."""
    pattern = rf"<!-- {re.escape(marker)} -->\s*```[a-z]*\n(.*?)```"
    match = re.search(pattern, README.read_text(encoding="utf-8"), re.DOTALL)
    assert match is not None, f"README.md has no block marked <!-- {marker} -->"
    return match.group(1)


def substituted(text: str, changes: dict[str, str]) -> str:
    """``text`` with each of ``changes`` made; each must be there, or the recipe has changed."""
    for old, new in changes.items():
        assert old in text, f"the README's recipe no longer has {old!r}:\n{text}"
        text = text.replace(old, new)
    return text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostfixInstance:
    directory: Path
    port: int

    @property
    def config_dir(self) -> Path:
        return self.directory / "conf"

    def log(self) -> str:
        path = self.directory / "maillog"
        return path.read_text(errors="replace") if path.exists() else "(no maillog)"

    def postfix(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def send(self, recipient: str, raw: bytes, sender: str = "carol@customer.test") -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            refused = client.sendmail(sender, [recipient], raw)
        assert refused == {}, refused


def _master_pid(instance: PostfixInstance) -> int | None:
    try:
        return int((instance.directory / "queue" / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop(instance: PostfixInstance) -> None:
    """Stop the instance, and make sure of it: a master left running would keep its port."""
    pid = _master_pid(instance)
    instance.postfix("stop")
    deadline = time.monotonic() + 30
    while pid is not None and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def postfix_dir() -> Iterator[Path]:
    """A directory Postfix's users can reach (pytest's tmp_path is root's alone), under /tmp
    whatever TMPDIR says."""
    _require_postfix()
    directory = Path(tempfile.mkdtemp(prefix="mailsupport-postfix-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def start_postfix(directory: Path, main_cf: str, master_cf: str) -> PostfixInstance:
    instance = PostfixInstance(directory, _free_port())
    instance.config_dir.mkdir()
    (directory / "queue").mkdir()
    (instance.config_dir / "main.cf").write_text(_MAIN_CF.format(dir=directory) + main_cf)
    (instance.config_dir / "master.cf").write_text(
        _MASTER_CF.format(port=instance.port) + master_cf
    )
    _readable_by_all(instance.config_dir)
    (directory / "queue").chmod(0o755)  # as Postfix's own, whatever the umask
    check = instance.postfix("check")  # creates the queue's folders, owned as they must be
    assert check.returncode == 0, check.stdout + check.stderr + instance.log()
    started = instance.postfix("start")
    if started.returncode != 0:
        _stop(instance)
        pytest.fail(f"postfix start failed: {started.stdout}{started.stderr}{instance.log()}")
    try:
        wait_for(lambda: _listening(instance.port), timeout=30)
    except AssertionError:
        _stop(instance)
        raise AssertionError(f"Postfix's smtpd does not listen:\n{instance.log()}") from None
    return instance


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _inbound(database: Path) -> list[tuple[str, str, str]]:
    """(envelope_from, envelope_to, Message-ID) of each stored mail, in the order stored."""
    if not database.exists():
        return []
    # Immutable: read as root, the database must not gain a -wal or -shm file that the
    # gateway's user could not write. That reads only what is in the file itself, which is
    # all there is once the last connection has closed.
    uri = f"file:{database}?immutable=1"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as db:
            query = "SELECT envelope_from, envelope_to, message_id FROM inbound ORDER BY id"
            rows = db.execute(query).fetchall()
    except sqlite3.DatabaseError:
        return []  # still being created, or written
    return [(str(a or ""), str(b), str(c)) for a, b, c in rows]


def _wait_for_mail(instance: PostfixInstance, database: Path, count: int) -> None:
    try:
        wait_for(lambda: len(_inbound(database)) >= count, timeout=60)
    except AssertionError:
        raise AssertionError(
            f"{count} mails not stored; Postfix's log:\n{instance.log()}"
        ) from None


def test_the_lmtp_recipe_delivers_to_the_support_address_and_its_extensions(
    postfix_dir: Path, relay: Sink
) -> None:
    database = postfix_dir / "mailsupport.db"
    data = config_data(f"sqlite:///{database}", smtp={"lmtp": True}, relay={"port": relay.port})
    daemon = Daemon(build_config(data, env={}), worker_processes=False)
    daemon.start()
    try:
        assert daemon.smtp_address is not None
        main_cf = substituted(
            readme_block("postfix: lmtp main.cf"),
            {"lmtp:inet:127.0.0.1:8025": f"lmtp:inet:127.0.0.1:{daemon.smtp_address[1]}"},
        )
        instance = start_postfix(postfix_dir, main_cf, "")
        try:
            instance.send("support@example.com", make_mail(message_id="<lmtp-1@customer.test>"))
            instance.send(
                "support+something@example.com",
                make_mail(message_id="<lmtp-2@customer.test>", subject="Second"),
            )
            with pytest.raises(smtplib.SMTPRecipientsRefused, match="User unknown"):
                instance.send("nobody@example.com", make_mail())
            _wait_for_mail(instance, database, 2)
        finally:
            _stop(instance)
        config_file = str(write_config(postfix_dir / "mailsupport.toml", data))
        wait_for(lambda: _tickets(config_file) == 2, timeout=30)
    finally:
        daemon.stop()
    assert sorted(_inbound(database)) == [
        ("carol@customer.test", '["support+something@example.com"]', "lmtp-2@customer.test"),
        ("carol@customer.test", '["support@example.com"]', "lmtp-1@customer.test"),
    ]
    assert show_ticket(config_file, 1)["requester"] == "carol@customer.test"


def _tickets(config_file: str) -> int:
    result = run_cli(config_file, "tickets", "list", "--json")
    return len(json.loads(result.stdout)) if result.exit_code == 0 else 0


SYSTEM_PYTHON = "/usr/bin/python3"
_REQUIRES_PYTHON = (3, 11)  # pyproject.toml's requires-python
# What `deliver --no-process` imports to store into a SQLite database at the current schema
# besides the standard library (tests/test_gateway_import.py keeps it that light).
_DELIVER_IMPORTS = (mailsupport, click)


def _version_for(user: str, python: str) -> tuple[int, int] | None:
    """The version of ``python`` when ``user`` runs it, or None if they cannot."""
    try:
        result = subprocess.run(
            [python, "-I", "-S", "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            user=user,
            cwd="/",
        )
    except OSError:
        return None
    if result.returncode != 0:
        return None
    major, minor = result.stdout.split()
    return int(major), int(minor)


def _copied_interpreter(directory: Path) -> tuple[str, dict[str, str]]:
    """This interpreter and its standard library, without its packages, copied to ``directory``.

    A pyenv build finds its libpython by an absolute path under its own prefix: the copy is
    pointed at its own with LD_LIBRARY_PATH.
    """
    prefix = directory / "python"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    libdir = Path(str(sysconfig.get_config_var("LIBDIR")))
    shutil.copytree(
        stdlib,
        prefix / "lib" / stdlib.name,
        ignore=shutil.ignore_patterns("site-packages", "test"),
    )
    for library in libdir.glob("libpython*.so*"):
        shutil.copy2(library, prefix / "lib" / library.name)
    python = prefix / "bin" / Path(os.path.realpath(sys.executable)).name
    python.parent.mkdir()
    shutil.copy2(os.path.realpath(sys.executable), python)
    return str(python), {"LD_LIBRARY_PATH": str(prefix / "lib")}


def _pipe_python(directory: Path) -> tuple[str, dict[str, str]]:
    """A Python the pipe's user can run, as the README's installation asks, and its environment."""
    version = _version_for(PIPE_USER, SYSTEM_PYTHON)
    if version is not None and version >= _REQUIRES_PYTHON:
        return SYSTEM_PYTHON, {}
    return _copied_interpreter(directory)


def _install_command(directory: Path) -> Path:
    """The `mailsupport` command, for this checkout, installed where the pipe's user can run it.

    The interpreter runs isolated and without its site packages (``-I -S``), so the gateway
    finds nothing but the copies: a module `deliver` newly imports fails this test.
    """
    try:
        pwd.getpwnam(PIPE_USER)
    except KeyError:
        _unavailable(
            f"no {PIPE_USER!r} user for the pipe: useradd --system --home /var/lib/mailsupport "
            f"{PIPE_USER} (.ci/run creates it)"
        )
    lib = directory / "lib"
    for package in _DELIVER_IMPORTS:
        source = Path(str(package.__file__)).parent
        shutil.copytree(source, lib / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    command = _write_command(directory / "bin", lib, *_pipe_python(directory))
    for tree in (lib, command.parent, directory / "python"):
        _readable_by_all(tree)
    check = subprocess.run(
        [str(command), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        user=PIPE_USER,
        cwd="/",
    )
    assert check.returncode == 0, f"user {PIPE_USER!r} cannot run {command}:\n{check.stderr}"
    return command


def _write_command(bin_dir: Path, lib: Path, python: str, env: dict[str, str]) -> Path:
    bin_dir.mkdir()
    main = bin_dir / "main.py"
    main.write_text(
        f"import sys\nsys.path.insert(0, {str(lib)!r})\n"
        "from mailsupport.cli.main import main\nmain()\n"
    )
    assignments = "".join(f"{name}={value} " for name, value in env.items())
    command = bin_dir / "mailsupport"
    command.write_text(f'#!/bin/sh\nexec env {assignments}{python} -I -S {main} "$@"\n')
    command.chmod(0o755)
    return command


def _readable_by_all(tree: Path) -> None:
    """Whatever the umask and the modes of the checkout, as an installation's files are."""
    if not tree.exists():
        return
    tree.chmod(0o755)
    for path in tree.rglob("*"):
        executable = path.is_dir() or path.stat().st_mode & 0o100
        path.chmod(0o755 if executable else 0o644)


def _create_schema(config: Path, state: Path) -> None:
    """The schema, as `serve` creates it at start, in the pipe user's state directory."""
    result = subprocess.run(
        [sys.executable, "-m", "mailsupport", "-c", str(config), "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path in state.iterdir():
        shutil.chown(path, PIPE_USER, PIPE_USER)


def test_the_pipe_recipe_stores_mail_through_the_gateway(postfix_dir: Path) -> None:
    command = _install_command(postfix_dir)
    state = postfix_dir / "state"  # /var/lib/mailsupport, the user's own
    state.mkdir()
    state.chmod(0o750)
    shutil.chown(state, PIPE_USER, PIPE_USER)
    config = postfix_dir / "mailsupport.toml"
    config.write_text(
        substituted(
            readme_block("deployment: mailsupport.toml"),
            {"/var/lib/mailsupport/": f"{state}/"},
        )
    )
    config.chmod(0o644)
    _create_schema(config, state)
    main_cf = readme_block("postfix: pipe main.cf")
    master_cf = substituted(
        readme_block("postfix: pipe master.cf"),
        {
            "/usr/local/bin/mailsupport": str(command),
            "/etc/mailsupport/mailsupport.toml": str(config),
        },
    )
    instance = start_postfix(postfix_dir, main_cf, master_cf)
    try:
        instance.send("support@example.com", make_mail(message_id="<pipe-1@customer.test>"))
        instance.send(
            "Support+Something@example.com",
            make_mail(message_id="<pipe-2@customer.test>", subject="Second"),
        )
        # A bounce's null return path reaches the gateway as an empty -f (null_sender=).
        instance.send("support+bounce@example.com", make_mail(message_id="<pipe-3@x.test>"), "")
        with pytest.raises(smtplib.SMTPRecipientsRefused, match="User unknown"):
            instance.send("nobody@example.com", make_mail())
        _wait_for_mail(instance, state / "mailsupport.db", 3)
    finally:
        _stop(instance)
    assert sorted(_inbound(state / "mailsupport.db")) == [
        ("", '["support+bounce@example.com"]', "pipe-3@x.test"),
        ("carol@customer.test", '["support+something@example.com"]', "pipe-2@customer.test"),
        ("carol@customer.test", '["support@example.com"]', "pipe-1@customer.test"),
    ]
