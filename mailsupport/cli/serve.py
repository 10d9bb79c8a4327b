"""``mailsupport serve``: run the daemon in the foreground."""

from __future__ import annotations

import logging

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.daemon import Daemon


@click.command()
@pass_context
def serve(ctx: CliContext) -> None:
    """Run the listener and the pipeline until stopped (SIGTERM / Ctrl-C)."""
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    config = ctx.config
    click.echo(
        f"mailsupport: {config.support.address} on {config.smtp.host}:{config.smtp.port}"
        f" ({'LMTP' if config.smtp.lmtp else 'SMTP'}), database {config.database.url}",
        err=True,
    )
    Daemon(config).serve_forever()
