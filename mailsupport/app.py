"""Opening the database for a configuration: engine, sessions and schema check."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock, SystemClock
from mailsupport.config import Config
from mailsupport.db.engine import is_sqlite, make_engine, make_sessionmaker
from mailsupport.db.migrate import current_revision, head_revision, upgrade
from mailsupport.errors import ConfigError, StorageError


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
    try:
        engine = make_engine(
            config.database.url,
            busy_timeout=config.database.busy_timeout,
            flush_each_commit=flush_each_commit,
            auto_checkpoint=auto_checkpoint,
        )
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigError(f"Invalid config: database.url cannot be used: {exc}.") from exc
    app = App(config, engine, make_sessionmaker(engine), clock or SystemClock())
    try:
        _check_schema(app, migrate=migrate)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StorageError(f"Cannot open the database {engine.url!r}: {exc}") from exc
    except Exception:
        engine.dispose()
        raise
    return app


def _check_schema(app: App, *, migrate: bool) -> None:
    current = current_revision(app.engine)
    if current == head_revision():
        return
    if migrate and (is_sqlite(app.engine) or current is None):
        upgrade(app.engine)
        return
    raise StorageError(
        f"The database schema is at {current or 'nothing'}, this version needs "
        f"{head_revision()}: run `mailsupport db upgrade`."
    )
