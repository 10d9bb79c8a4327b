"""``mailsupport deliver`` (mail gateway) and ``mailsupport import mbox|maildir``.

The MTA runs ``deliver`` once for every mail, so what this module imports is paid per mail:
the pipeline and the importer are imported only by what uses them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.clock import SystemClock
from mailsupport.errors import MailsupportError, first_line
from mailsupport.intake.gateway import EX_OK, EX_TEMPFAIL
from mailsupport.intake.gateway import deliver as deliver_mail


def _temporary_failure(what: str) -> NoReturn:
    click.echo(f"mailsupport deliver: temporary failure: {what}", err=True)
    sys.exit(EX_TEMPFAIL)


def _what_failed(exc: Exception) -> str:
    """One line: our errors say what failed themselves, anything else is named by its type."""
    text = first_line(exc)
    if isinstance(exc, MailsupportError | OSError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _GatewayCommand(click.Command):
    """Usage mistakes defer the mail too: a typo in master.cf must not bounce every message."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _temporary_failure(exc.format_message())


@click.command(cls=_GatewayCommand)
@click.option("-f", "--sender", "envelope_from", help="Envelope sender (Postfix: ${sender}).")
@click.option(
    "-r",
    "--recipient",
    "recipients",
    multiple=True,
    help="Envelope recipient (Postfix: ${recipient}); may repeat.",
)
@click.option(
    "--no-process", is_flag=True, help="Only store; leave processing to the running daemon."
)
@pass_context
def deliver(
    ctx: CliContext, envelope_from: str | None, recipients: tuple[str, ...], no_process: bool
) -> None:
    """Store one message read from standard input (exit 0 stored, 75 try again later)."""
    try:
        raw = sys.stdin.buffer.read()
        stored = deliver_mail(
            ctx.config,
            lambda: ctx.app.factory,
            SystemClock(),
            raw,
            envelope_from=envelope_from,
            recipients=recipients,
        )
    except Exception as exc:
        # Postfix's pipe transport bounces mail on any exit but 75: whatever went wrong, the
        # customer's mail must stay in the MTA's queue until it can be stored.
        _temporary_failure(_what_failed(exc))
    if not no_process and not stored.duplicate:
        # The message is safe already; a processing failure quarantines it, never fails delivery.
        try:
            from mailsupport.pipeline.runner import Pipeline  # noqa: PLC0415

            Pipeline(ctx.app.factory, ctx.config, ctx.app.clock).process_one(stored.inbound_id)
        except Exception as exc:
            click.echo(f"mailsupport deliver: stored; processing deferred: {exc}", err=True)
    sys.exit(EX_OK)


@click.group("import")
def import_group() -> None:
    """Import existing mail (idempotent: nothing is stored twice)."""


def _run_import(ctx: CliContext, kind: str, path: str, no_process: bool) -> None:
    from mailsupport.intake.importer import (  # noqa: PLC0415
        ImportStats,
        import_messages,
        iter_raw,
        open_mailbox,
    )
    from mailsupport.pipeline.runner import Pipeline  # noqa: PLC0415

    box = open_mailbox(kind, Path(path))
    total = len(box)
    stats = ImportStats()
    with click.progressbar(length=total, label=f"Storing {total} messages", file=sys.stderr) as bar:
        for count in import_messages(ctx.app.factory, ctx.app.clock, iter_raw(box), stats):
            bar.update(count)
    click.echo(f"Stored {stats.stored} new, {stats.duplicates} already stored.")
    if no_process:
        return
    processed = Pipeline(ctx.app.factory, ctx.config, ctx.app.clock).process_pending()
    click.echo(f"Processed {processed} messages.")


@import_group.command("mbox")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--no-process", is_flag=True, help="Only store; leave processing to the daemon.")
@pass_context
def import_mbox(ctx: CliContext, path: str, no_process: bool) -> None:
    """Import every message of an mbox file."""
    _run_import(ctx, "mbox", path, no_process)


@import_group.command("maildir")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--no-process", is_flag=True, help="Only store; leave processing to the daemon.")
@pass_context
def import_maildir(ctx: CliContext, path: str, no_process: bool) -> None:
    """Import every message of a Maildir (cur/ and new/)."""
    _run_import(ctx, "maildir", path, no_process)
