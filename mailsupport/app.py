"""Opening the database for a configuration: engine, sessions and schema check."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock, SystemClock
from mailsupport.config import Config
from mailsupport.db.engine import (
    READ_ONLY,
    driver_message,
    is_sqlite,
    make_engine,
    make_sessionmaker,
    read_session,
    shown_url,
)
from mailsupport.db.schema import HEAD, REVISIONS_QUERY
from mailsupport.db.sqlite_conn import url_key
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
        f"Cannot open the database {shown_url(config.database.url)} "
        f"({url_key(config.database.url)}): {driver_message(exc)}"
    )


def connect_once(config: Config, engine: Engine) -> None:
    """Connect before any work, so that an unreachable database is told as such."""
    try:
        engine.connect().close()
    except SQLAlchemyError as exc:
        raise cannot_open(config, exc) from exc


def _check_schema(app: App, *, migrate: bool) -> None:
    if _at_head(app.engine):
        return
    # Alembic only when there is something to do or to explain: loading it and its scripts
    # costs more than the rest of a short command.
    from mailsupport.db.migrate import (  # noqa: PLC0415
        check_known,
        current_revision,
        head_revision,
        upgrade,
    )

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


def _at_head(engine: Engine) -> bool:
    """Whether the database is at this version's schema, asked without Alembic."""
    # Read-only, so that opening the database (every CLI command does) need not wait for a
    # writer such as a pipeline batch to finish.
    with engine.connect().execution_options(**READ_ONLY) as connection:
        try:
            revisions = connection.exec_driver_sql(REVISIONS_QUERY).scalars().all()
        except DBAPIError:
            return False  # no version table yet: the full check says what to do
    return list(revisions) == [HEAD]

def prepare_queues(app: App) -> None:
    """Make the queues the configuration names; when they all exist, this only reads."""
    with read_session(app.factory) as session:
        missing = missing_queues(session, app.config)
    if missing:
        with app.factory.begin() as session:
            create_configured_queues(session, app.config)
