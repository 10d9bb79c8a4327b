"""A daemon's identity across restarts, and the proof that it is the only one running as it.

Claims (stored mail in a worker's hands, outbound mail being sent) name their ``Owner``: the
daemon's instance id, stable across its restarts, and when this run of it started. A daemon
started again takes back at once whatever an earlier run held, instead of waiting out the
leases meant for other daemons; that is only safe while no other process runs as the same
instance, which ``InstanceLock`` makes sure of for as long as the daemon runs.

The lock dies with the process, however it ends (even ``kill -9``): on SQLite an ``flock`` on a
file beside the database, on PostgreSQL a session advisory lock on a connection of its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, text

from mailsupport.errors import ConfigError


@dataclass(frozen=True)
class Owner:
    """Whose claims rows carry: a daemon's instance id, and when this run of it started."""

    instance: str
    started: datetime


def _digest(instance: str) -> bytes:
    return hashlib.sha256(f"mailsupport instance {instance}".encode()).digest()


def _already_running(instance: str) -> ConfigError:
    return ConfigError(
        f"Another mailsupport daemon is running as instance {instance!r} (daemon.instance)."
    )


class InstanceLock:
    """Held while a daemon runs as ``instance``; ``acquire`` refuses a second one."""

    def __init__(self, engine: Engine, instance: str) -> None:
        self._engine = engine
        self._instance = instance
        self._fd: int | None = None
        self._conn: Connection | None = None

    def acquire(self) -> None:
        if self._engine.dialect.name == "postgresql":
            self._acquire_advisory()
        else:
            self._acquire_file()

    def _acquire_advisory(self) -> None:
        key = int.from_bytes(_digest(self._instance)[:8], "big", signed=True)
        conn = self._engine.connect()
        try:
            # Autocommit: a session lock outlives transactions, and none stays open meanwhile.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            held = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
        except BaseException:
            conn.close()
            raise
        if not held:
            conn.close()
            raise _already_running(self._instance)
        self._conn = conn

    def _acquire_file(self) -> None:
        database = self._engine.url.database
        if not database or database == ":memory:":
            return  # nobody else can open it
        path = f"{os.path.abspath(database)}.{_digest(self._instance).hex()[:12]}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _already_running(self._instance) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the lock
        if self._conn is not None:
            conn, self._conn = self._conn, None
            # Back in the pool, the connection would keep the lock: it belongs to the session.
            conn.invalidate()
            conn.close()
