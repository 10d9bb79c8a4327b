"""SQLite connection settings and the wait for its write lock, on the sqlite3 driver alone.

The engine applies them to every connection it opens; the mail gateway, which stores one
message per process and cannot afford to import SQLAlchemy for it, applies them to its own.
"""

from __future__ import annotations

import os
import sqlite3
import time

# SQLite's own busy handler sleeps in steps that grow to 100 ms, so a writer queued behind a
# transaction of a few milliseconds often sleeps far longer than the lock is held; under load
# that halves acceptance. Writers therefore poll for the lock themselves, in short steps.
_FIRST_WAIT = 0.0002  # seconds
_LONGEST_WAIT = 0.002
_URL_PREFIX = "sqlite:///"


def configure(
    dbapi_conn: sqlite3.Connection, *, synchronous: str, checkpoint_pages: int, busy_timeout: float
) -> None:
    """WAL, the given durability, foreign keys; transactions begun by the caller."""
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute(f"PRAGMA wal_autocheckpoint={checkpoint_pages}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    cursor.close()


def begin_immediate(dbapi_conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Take the write lock, waiting at most ``busy_timeout`` seconds for it.

    Raises the driver's ``sqlite3.OperationalError`` when the lock stays taken.
    """
    deadline = time.monotonic() + busy_timeout
    wait = _FIRST_WAIT
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy_error(exc) or time.monotonic() + wait > deadline:
                    raise
            time.sleep(wait)
            wait = min(wait * 2, _LONGEST_WAIT)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")


def is_busy_error(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def sqlite_file(url: str) -> str | None:
    """The file named by a plain ``sqlite:///`` URL; None for any other URL (a driver, options,
    an in-memory database), which only SQLAlchemy reads right."""
    if not url.startswith(_URL_PREFIX):
        return None
    path = url.removeprefix(_URL_PREFIX)
    if not path or path == ":memory:" or any(c in path for c in "?%"):
        return None
    return path


def url_key(url: str) -> str:
    """The key to name in an error about the database at ``url``; for a relative SQLite path,
    also the directory it was looked for in: the process's own, which for an MTA's pipe is
    seldom the one meant."""
    path = sqlite_file(url)
    if path is None or os.path.isabs(path):
        return "database.url"
    return f"database.url, relative to {os.getcwd()}"
