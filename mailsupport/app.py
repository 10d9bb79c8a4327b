"""Opening the database for a configuration: engine, sessions and schema check."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock, SystemClock
from mailsupport.config import Config
from mailsupport.db.engine import (
    driver_message,
    is_sqlite,
    make_engine,
    make_sessionmaker,
    read_session,
    shown_url,
)
from mailsupport.db.migrate import check_known, current_revision, head_revision, upgrade
from mailsupport.domain.queues import create_configured_queues, missing_queues
from mailsupport.errors import ConfigError, StorageError, first_line


@dataclass
class App:
    config: Config
    engine: Engine
    factory: sessionmaker[Session]
    clock: Clock = field(default_factory=SystemClock)

    def close(self) -> None:
        self.engine.dispose()


def open_app(
    config: Config,
    *,
    clock: Clock | None = None,
    migrate: bool = False,
    flush_each_commit: bool = True,
    auto_checkpoint: bool = True,
) -> App:
    """Connect to the configured database and make sure its schema is current.

    SQLite databases are created and upgraded on the spot when ``migrate`` is set (the
    embedded default should just work); PostgreSQL is shared by several daemons, so its schema
    only changes through ``mailsupport db upgrade``.
    """
    engine = database_engine(
        config, flush_each_commit=flush_each_commit, auto_checkpoint=auto_checkpoint
    )
    app = App(config, engine, make_sessionmaker(engine), clock or SystemClock())
    try:
        _check_schema(app, migrate=migrate)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise cannot_open(config, exc) from exc
    except Exception:
        engine.dispose()
        raise
    return app


def database_engine(
    config: Config, *, flush_each_commit: bool = True, auto_checkpoint: bool = True
) -> Engine:
    """An engine for ``database.url`` (not connected yet)."""
    try:
        return make_engine(
            config.database.url,
            busy_timeout=config.database.busy_timeout,
            flush_each_commit=flush_each_commit,
            auto_checkpoint=auto_checkpoint,
        )
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        # A missing driver explains itself over several lines; the first says which.
        first = first_line(exc) or type(exc).__name__
        raise ConfigError(f"Invalid config: database.url cannot be used: {first}.") from exc


def cannot_open(config: Config, exc: SQLAlchemyError) -> StorageError:
    """One sentence naming the key to check, never the password, and what the driver said."""
    return StorageError(
        f"Cannot open the database {shown_url(config.database.url)} (database.url): "
        f"{driver_message(exc)}"
    )


def connect_once(config: Config, engine: Engine) -> None:
    """Connect before any work, so that an unreachable database is told as such."""
    try:
        engine.connect().close()
    except SQLAlchemyError as exc:
        raise cannot_open(config, exc) from exc


def _check_schema(app: App, *, migrate: bool) -> None:
    current = current_revision(app.engine)
    if current == head_revision():
        return
    check_known(current)
    if migrate and (is_sqlite(app.engine) or current is None):
        upgrade(app.engine)
        return
    raise StorageError(
        f"The database schema is at {current or 'nothing'}, this version needs "
        f"{head_revision()}: run `mailsupport db upgrade`."
    )



def prepare_queues(app: App) -> None:
    """Make the queues the configuration names; when they all exist, this only reads."""
    with read_session(app.factory) as session:
        missing = missing_queues(session, app.config)
    if missing:
        with app.factory.begin() as session:
            create_configured_queues(session, app.config)
