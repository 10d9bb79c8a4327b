"""What every command needs: the configuration, the database, one session per command.

The database layer (and logging) is imported when a command first asks for it, not with this
module: `mailsupport deliver` runs once for every mail and mostly stores it without either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from mailsupport.config import Config, load_config

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailsupport.app import App
    from mailsupport.outbound.notify import Notifier


@dataclass
class CliContext:
    config_path: str | None
    verbose: bool = False
    _config: Config | None = None
    _app: App | None = field(default=None, repr=False)
    _notifier: Notifier | None = field(default=None, repr=False)
    _logging: bool = field(default=False, repr=False)

    def set_up_logging(self) -> None:
        """Log to standard error (once). Every command but the gateway does it at its start; the
        gateway, when it needs more than the sqlite3 driver, and for a tenth of its cost."""
        if self._logging:
            return
        self._logging = True
        import logging  # noqa: PLC0415

        from mailsupport.logs import setup_logging  # noqa: PLC0415

        setup_logging(logging.DEBUG if self.verbose else logging.WARNING)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def app(self) -> App:
        if self._app is None:
            self.set_up_logging()  # the database layer, and all that uses it, may log
            from mailsupport.app import open_app  # noqa: PLC0415

            self._app = open_app(self.config, migrate=True)
        return self._app

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """The command's one session; its notifications queued, then committed, on success.

        The queues the configuration names are made first, if missing (a read when they are
        not), so that a command can use them before any mail was routed to them.
        """
        from mailsupport.domain.queues import create_configured_queues  # noqa: PLC0415

        with self.app.factory.begin() as session:
            create_configured_queues(session, self.config)
            yield session
            self.notifier.flush(session)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for a command that only shows: on SQLite it does not queue for the write
        lock, so `tickets show` answers at once while the pipeline is busy."""
        from mailsupport.db.engine import read_session  # noqa: PLC0415

        with read_session(self.app.factory) as session:
            yield session

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            from mailsupport.outbound.notify import Notifier  # noqa: PLC0415

            self._notifier = Notifier(self.config, self.app.clock)
        return self._notifier

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


pass_context = click.make_pass_decorator(CliContext)
