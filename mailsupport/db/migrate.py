"""Schema migrations with Alembic, driven from code so no alembic.ini is needed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from mailsupport.db.engine import READ_ONLY
from mailsupport.errors import StorageError

MIGRATIONS = Path(__file__).with_name("migrations")


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (creating it in an empty database)."""
    config = _alembic_config()
    with engine.begin() as connection:
        check_known(MigrationContext.configure(connection).get_current_revision())
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def is_known(revision: str | None) -> bool:
    """Whether this version has a migration script for ``revision`` (None: an empty database)."""
    if revision is None:
        return True
    scripts = ScriptDirectory.from_config(_alembic_config())
    return revision in {script.revision for script in scripts.walk_revisions()}


def check_known(revision: str | None) -> None:
    """Refuse a schema a newer mailsupport has migrated, as after a rollback of the package.

    Alembic cannot step from a revision it has no script for, and says so with a traceback.
    """
    if not is_known(revision):
        raise StorageError(
            f"The database is at schema revision {revision}, which this version of mailsupport "
            "does not know: upgrade mailsupport."
        )


def current_revision(engine: Engine) -> str | None:
    # Read-only, so that opening the database (every CLI command does) need not wait for a
    # writer such as a pipeline batch to finish.
    with engine.connect().execution_options(**READ_ONLY) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a new revision from the models (for developers)."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
