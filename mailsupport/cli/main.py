"""Entry point: global options, and errors turned into one line instead of a traceback."""

from __future__ import annotations

import logging
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from mailsupport import __version__
from mailsupport.cli.context import CliContext
from mailsupport.cli.db import db
from mailsupport.cli.imap import imap
from mailsupport.cli.inbox import inbox
from mailsupport.cli.intake import deliver, import_group
from mailsupport.cli.operators import operators
from mailsupport.cli.outbox import outbox
from mailsupport.cli.participants import participants
from mailsupport.cli.quarantine import quarantine
from mailsupport.cli.serve import serve
from mailsupport.cli.tickets import tickets
from mailsupport.config import CONFIG_ENV
from mailsupport.db.engine import driver_message
from mailsupport.errors import MailsupportError
from mailsupport.logs import setup_logging


class _Group(click.Group):
    """Prints our errors as the one sentence they carry, and exits 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailsupportError as exc:
            click.echo(str(exc), err=True)
            ctx.exit(1)
        except SQLAlchemyError as exc:
            click.echo(f"Database error: {driver_message(exc)}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar=CONFIG_ENV,
    help=f"TOML configuration file (default: ${CONFIG_ENV}, else built-in defaults).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
@click.version_option(__version__, prog_name="mailsupport")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """mailsupport: an email-first ticketing daemon."""
    setup_logging(logging.DEBUG if verbose else logging.WARNING)
    context = CliContext(config_path)
    ctx.obj = context
    ctx.call_on_close(context.close)


_COMMANDS = (
    serve,
    db,
    deliver,
    import_group,
    tickets,
    participants,
    operators,
    inbox,
    quarantine,
    outbox,
    imap,
)
for command in _COMMANDS:
    cli.add_command(command)


def main() -> None:
    cli(prog_name="mailsupport")
