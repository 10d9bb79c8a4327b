"""``mailsupport db``: schema migrations."""

from __future__ import annotations

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.db.engine import make_engine
from mailsupport.db.migrate import current_revision, head_revision, upgrade


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_context
def upgrade_command(ctx: CliContext) -> None:
    """Create the schema, or bring it up to this version."""
    engine = make_engine(ctx.config.database.url, busy_timeout=ctx.config.database.busy_timeout)
    try:
        upgrade(engine)
        click.echo(f"Database at revision {current_revision(engine)}")
    finally:
        engine.dispose()


@db.command("status")
@pass_context
def status_command(ctx: CliContext) -> None:
    """Show the schema revision and whether it is current."""
    engine = make_engine(ctx.config.database.url, busy_timeout=ctx.config.database.busy_timeout)
    try:
        current, head = current_revision(engine), head_revision()
    finally:
        engine.dispose()
    state = "up to date" if current == head else "needs `mailsupport db upgrade`"
    click.echo(f"Database at {current or 'nothing'}; code expects {head}: {state}")
