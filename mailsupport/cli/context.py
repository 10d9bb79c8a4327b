"""What every command needs: the configuration, the database, one session per command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import click
from sqlalchemy.orm import Session

from mailsupport.app import App, open_app
from mailsupport.config import Config, load_config
from mailsupport.db.engine import read_session
from mailsupport.domain.queues import create_configured_queues
from mailsupport.outbound.notify import Notifier


@dataclass
class CliContext:
    config_path: str | None
    _config: Config | None = None
    _app: App | None = field(default=None, repr=False)
    _notifier: Notifier | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def app(self) -> App:
        if self._app is None:
            self._app = open_app(self.config, migrate=True)
        return self._app

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """The command's one session; its notifications queued, then committed, on success.

        The queues the configuration names are made first, if missing (a read when they are
        not), so that a command can use them before any mail was routed to them.
        """
        with self.app.factory.begin() as session:
            create_configured_queues(session, self.config)
            yield session
            self.notifier.flush(session)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for a command that only shows: on SQLite it does not queue for the write
        lock, so `tickets show` answers at once while the pipeline is busy."""
        with read_session(self.app.factory) as session:
            yield session

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            self._notifier = Notifier(self.config, self.app.clock)
        return self._notifier

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


pass_context = click.make_pass_decorator(CliContext)
