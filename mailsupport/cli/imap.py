"""``mailsupport imap``: how each IMAP account fares, and a look at one that changes nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.clock import as_utc
from mailsupport.config import Config, ImapAccount
from mailsupport.db.engine import read_session
from mailsupport.db.imapstate import UNKNOWN_UIDVALIDITY, FolderKey, checkpoints
from mailsupport.db.models import ImapCheckpoint
from mailsupport.errors import NotFoundError
from mailsupport.intake.mailbox import Finish, Mailbox, Probe

_PLANS = {
    Finish.MOVE: "move to {target}",
    Finish.COPY: "copy to {target}, then expunge just that message (no MOVE on this server)",
    Finish.DELETE: "delete (expunging just that message)",
    Finish.MARK_DELETED: "mark \\Deleted (no UIDPLUS: nothing is expunged)",
    Finish.FLAG: "mark \\Seen and leave it",
}


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def find_account(config: Config, name: str) -> ImapAccount:
    for account in config.imap:
        if account.name == name:
            return account
    raise NotFoundError(f"No such IMAP account: {name}")


def is_connected(account: ImapAccount, row: ImapCheckpoint | None, now: datetime) -> bool:
    """Connected by the poller's last word, unless that word is too old to be true.

    A running poller writes at least once per IDLE refresh or poll; a daemon that was killed
    cannot say it disconnected, so its last "connected" goes stale instead.
    """
    if row is None or not row.connected:
        return False
    heartbeat = max(account.idle_refresh, account.poll_interval) + account.timeout
    return now - as_utc(row.updated_at) <= timedelta(seconds=2 * heartbeat)


def account_status(
    account: ImapAccount, row: ImapCheckpoint | None, now: datetime
) -> dict[str, Any]:
    return {
        "name": account.name,
        "host": account.host,
        "username": account.username,
        "folder": account.folder,
        "after": account.after,
        "queue": account.queue or None,
        "connected": is_connected(account, row, now),
        "uidvalidity": row.uidvalidity if row and row.uidvalidity else None,
        "last_uid": row.last_uid if row else 0,
        "backlog": row.backlog if row else 0,
        "last_error": row.last_error if row else None,
        "last_error_at": _iso(row.last_error_at) if row else None,
        "last_success_at": _iso(row.last_success_at) if row else None,
        "updated_at": _iso(row.updated_at) if row else None,
    }


@click.group()
def imap() -> None:
    """IMAP mailboxes the daemon takes mail from."""


@imap.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def status_command(ctx: CliContext, as_json: bool) -> None:
    """Each account: connected, last UID taken in, backlog, last error."""
    now = ctx.app.clock.now()
    with read_session(ctx.app.factory) as session:
        rows = checkpoints(session)
        views = [
            account_status(a, rows.get(FolderKey(a.name, a.folder)), now) for a in ctx.config.imap
        ]
    if as_json:
        click.echo(json.dumps(views, ensure_ascii=False, indent=2))
        return
    if not views:
        click.echo("No IMAP accounts are configured.")
    for view in views:
        state = "connected" if view["connected"] else "not connected"
        click.echo(
            f"{view['name']:<16} {state:<13} {view['folder']}  last UID {view['last_uid']}"
            f"  backlog {view['backlog']}  last success {view['last_success_at'] or 'never'}"
        )
        if view["last_error"]:
            click.echo(f"{'':<16} last error at {view['last_error_at']}: {view['last_error']}")


def _checkpoint(ctx: CliContext, account: ImapAccount) -> tuple[int, int]:
    with read_session(ctx.app.factory) as session:
        row = checkpoints(session).get(FolderKey(account.name, account.folder))
    return (row.uidvalidity, row.last_uid) if row else (UNKNOWN_UIDVALIDITY, 0)


def _report(account: ImapAccount, probe: Probe) -> list[str]:
    flags = ", ".join(
        f"{name} {'yes' if name in probe.capabilities else 'no'}"
        for name in ("IDLE", "MOVE", "UIDPLUS")
    )
    after = _PLANS[probe.plan].format(target=account.after_folder)
    if probe.plan in (Finish.MOVE, Finish.COPY) and not probe.target_exists:
        after += " (created at the first start)"
    return [
        f"Logged in to {account.host}:{account.port} ({account.tls}) as {account.username}",
        f"Capabilities: {flags}",
        f"Folders: {', '.join(probe.folders)}",
        f"{account.folder}: {probe.messages} message(s), {probe.new} not taken in yet",
        f"After storing a message: {after}",
    ]


@imap.command("test")
@click.argument("name")
@pass_context
def test_command(ctx: CliContext, name: str) -> None:
    """Log in, list folders and count messages, changing nothing."""
    account = find_account(ctx.config, name)
    uidvalidity, last_uid = _checkpoint(ctx, account)
    with Mailbox.open(account) as box:
        probe = box.probe(uidvalidity, last_uid)
    for line in _report(account, probe):
        click.echo(line)
