"""``mailsupport serve``: run the daemon in the foreground."""

from __future__ import annotations

import errno
import logging
import os
import socket

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.config import Config, SmtpConfig
from mailsupport.daemon import Daemon
from mailsupport.db.engine import shown_url
from mailsupport.errors import ConfigError

log = logging.getLogger(__name__)

# Why the listening socket could not be had, and which keys of [smtp] say where it should be.
_LISTEN_KEYS = {
    errno.EADDRINUSE: "smtp.host/smtp.port",
    errno.EADDRNOTAVAIL: "smtp.host",
    errno.EACCES: "smtp.port",
}


@click.command()
@pass_context
def serve(ctx: CliContext) -> None:
    """Run the listener and the pipeline until stopped (SIGTERM / Ctrl-C)."""
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    config = ctx.config
    log.info(
        "mailsupport: %s on %s:%s (%s), database %s",
        config.support.address,
        config.smtp.host,
        config.smtp.port,
        "LMTP" if config.smtp.lmtp else "SMTP",
        shown_url(config.database.url),
    )
    try:
        Daemon(config).serve_forever()  # a start that fails stops what it had started
    except Exception as exc:
        raise _start_failure(config, exc) from exc


def _start_failure(config: Config, exc: Exception) -> Exception:
    """The one sentence for a listening socket the system refused; other errors unchanged."""
    if isinstance(exc, socket.gaierror):
        return _cannot_listen(config.smtp, "smtp.host", str(exc.strerror))
    if isinstance(exc, OSError) and exc.errno in _LISTEN_KEYS:
        return _cannot_listen(config.smtp, _LISTEN_KEYS[exc.errno], os.strerror(exc.errno))
    return exc


def _cannot_listen(smtp: SmtpConfig, keys: str, cause: str) -> ConfigError:
    host = f"[{smtp.host}]" if ":" in smtp.host else smtp.host
    return ConfigError(f"Cannot listen on {host}:{smtp.port} ({keys}): {cause.lower()}")
