"""Entry point: global options, and errors turned into one line instead of a traceback.

Each command's module is imported only when that command runs (click's lazy group): the MTA
runs `mailsupport deliver` once for every mail, and importing every command with it, the daemon
and Alembic among them, cost more than a second of CPU per mail.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from mailsupport import __version__
from mailsupport.cli.context import CliContext
from mailsupport.config import CONFIG_ENV
from mailsupport.errors import MailsupportError

# Command name -> "module:attribute" of its click command.
_COMMANDS = {
    "serve": "mailsupport.cli.serve:serve",
    "db": "mailsupport.cli.db:db",
    "deliver": "mailsupport.cli.intake:deliver",
    "import": "mailsupport.cli.intake:import_group",
    "tickets": "mailsupport.cli.tickets:tickets",
    "participants": "mailsupport.cli.participants:participants",
    "operators": "mailsupport.cli.operators:operators",
    "inbox": "mailsupport.cli.inbox:inbox",
    "quarantine": "mailsupport.cli.quarantine:quarantine",
    "outbox": "mailsupport.cli.outbox:outbox",
    "imap": "mailsupport.cli.imap:imap",
}


def _database_error(exc: Exception) -> str | None:
    """The line for an error of SQLAlchemy's ("Database error: ..."); None for any other."""
    loaded = sys.modules.get("sqlalchemy.exc")
    # Not loaded: the command has not used the database through SQLAlchemy at all.
    if loaded is None or not isinstance(exc, loaded.SQLAlchemyError):
        return None
    from mailsupport.db.engine import driver_message  # noqa: PLC0415 (loaded with SQLAlchemy)

    return f"Database error: {driver_message(exc)}"


class _Group(click.Group):
    """Loads commands when they are used; prints our errors as the one sentence they carry, and
    exits 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = _COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailsupportError as exc:
            click.echo(str(exc), err=True)
            ctx.exit(1)
        except Exception as exc:
            message = _database_error(exc)
            if message is None:
                raise
            click.echo(message, err=True)
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
    context = CliContext(config_path, verbose=verbose)
    ctx.obj = context
    ctx.call_on_close(context.close)
    if ctx.invoked_subcommand != "deliver":
        context.set_up_logging()


def main() -> None:
    cli(prog_name="mailsupport")
