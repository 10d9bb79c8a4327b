"""Engines and sessions, with the per-backend settings that make them safe.

SQLite runs in WAL mode with ``synchronous=FULL`` so that a commit is on disk before we
answer 250, and every write transaction starts with ``BEGIN IMMEDIATE`` so that writers queue
for the lock up front instead of failing half-way through when upgrading a read lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.db.sqlite_conn import begin_immediate, configure, is_busy_error
from mailsupport.errors import first_line

READ_ONLY = {"mailsupport_read_only": True}


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(
    url: str,
    *,
    busy_timeout: float = 5.0,
    echo: bool = False,
    flush_each_commit: bool = True,
    auto_checkpoint: bool = True,
) -> Engine:
    """An engine for ``url``; SQLite gets WAL, full sync and immediate write transactions.

    ``auto_checkpoint=False`` leaves copying the WAL back into the database to other
    connections and to ``checkpoint``: a pipeline worker then never stalls a message on it.
    """
    if url.startswith("sqlite"):
        return _sqlite_engine(url, busy_timeout, echo, flush_each_commit, auto_checkpoint)
    return create_engine(url, echo=echo, pool_pre_ping=True, future=True)


def shown_url(url: str) -> str:
    """``url`` as it may be printed or logged: the password, if any, as ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return url.split("://", 1)[0] + "://..."


def driver_message(exc: SQLAlchemyError) -> str:
    """The first line the database driver gave, without SQLAlchemy's wrapping and links."""
    original = getattr(exc, "orig", None)
    return first_line(original if original is not None else exc) or type(exc).__name__


def checkpoint(engine: Engine) -> None:
    """Copy what the WAL holds into the SQLite database, without waiting on any reader."""
    if is_sqlite(engine):
        # Outside any transaction: within one (and SQLAlchemy would begin one) it cannot run.
        connection = engine.raw_connection()
        try:
            connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            connection.close()


def _sqlite_engine(
    url: str, busy_timeout: float, echo: bool, flush_each_commit: bool, auto_checkpoint: bool
) -> Engine:
    # NORMAL keeps WAL consistent but may lose the last commits on power loss (never on a
    # crash of the process): fine for work that is redone from stored mail, not for storing it.
    synchronous = "FULL" if flush_each_commit else "NORMAL"
    # Pages of WAL after which a commit also checkpoints (SQLite's default); 0 never does.
    checkpoint_pages = 1000 if auto_checkpoint else 0
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how transactions start.
        configure(
            dbapi_conn,
            synchronous=synchronous,
            checkpoint_pages=checkpoint_pages,
            busy_timeout=busy_timeout,
        )

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("mailsupport_read_only", False):
            conn.exec_driver_sql("BEGIN")
            return
        dbapi_conn = conn.connection.dbapi_connection
        assert isinstance(dbapi_conn, sqlite3.Connection)
        _begin_immediate(dbapi_conn, busy_timeout)

    return engine


def _begin_immediate(dbapi_conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Take the write lock, waiting at most ``busy_timeout`` seconds for it."""
    try:
        begin_immediate(dbapi_conn, busy_timeout)
    except sqlite3.OperationalError as exc:
        # As SQLAlchemy would have raised it, for callers that catch its errors.
        raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says another connection held SQLite's lock for longer than we waited."""
    original = exc.orig if isinstance(exc, OperationalError) else exc
    return isinstance(original, sqlite3.OperationalError) and is_busy_error(original)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, future=True)


@contextmanager
def read_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reading only: on SQLite it does not take the write lock."""
    with factory() as session:
        session.connection(execution_options=READ_ONLY)
        yield session
