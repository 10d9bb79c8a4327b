"""``mailsupport db``: schema migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy import Engine

from mailsupport.app import connect_once, database_engine
from mailsupport.cli.context import CliContext, pass_context
from mailsupport.db.migrate import current_revision, head_revision, is_known, upgrade


@contextmanager
def _database(ctx: CliContext) -> Iterator[Engine]:
    """The configured database, connected; these commands must not need a current schema."""
    engine = database_engine(ctx.config)
    try:
        connect_once(ctx.config, engine)
        yield engine
    finally:
        engine.dispose()


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_context
def upgrade_command(ctx: CliContext) -> None:
    """Create the schema, or bring it up to this version."""
    with _database(ctx) as engine:
        upgrade(engine)
        click.echo(f"Database at revision {current_revision(engine)}")


@db.command("status")
@pass_context
def status_command(ctx: CliContext) -> None:
    """Show the schema revision and whether it is current."""
    with _database(ctx) as engine:
        current, head = current_revision(engine), head_revision()
    click.echo(f"Database at {current or 'nothing'}; code expects {head}: {_state(current, head)}")


def _state(current: str | None, head: str | None) -> str:
    if current == head:
        return "up to date"
    if not is_known(current):
        return "a revision this version does not know: upgrade mailsupport"
    return "needs `mailsupport db upgrade`"
