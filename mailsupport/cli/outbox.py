"""``mailsupport outbox``: outbound mail, its delivery state, and retrying it."""

from __future__ import annotations

import json
from typing import Any

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.clock import as_utc
from mailsupport.db.models import Outbox
from mailsupport.outbound.outbox import get_outbox, list_outbox, retry


def _iso(value: Any) -> str | None:
    return as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def outbox_view(row: Outbox) -> dict[str, Any]:
    return {
        "id": row.id,
        "ticket_id": row.ticket_id,
        "kind": row.kind,
        "automatic": row.automatic,
        "message_id": row.message_id,
        "status": row.state,
        "attempts": row.attempts,
        "created_at": _iso(row.created_at),
        "next_attempt_at": _iso(row.next_attempt_at) if row.state == "pending" else None,
        "sent_at": _iso(row.sent_at),
        "last_error": row.last_error,
        "recipients": [
            {"address": r.address, "status": r.state, "code": r.code, "detail": r.detail}
            for r in row.recipients
        ],
    }


@click.group()
def outbox() -> None:
    """Outbound mail."""


@outbox.command("list")
@click.option("--status", type=click.Choice(["pending", "sent", "failed", "cancelled"]))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def list_command(ctx: CliContext, status: str | None, as_json: bool) -> None:
    """List outbound mail, newest first."""
    with ctx.reading() as session:
        rows = [outbox_view(r) for r in list_outbox(session, status)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        to = ", ".join(r["address"] for r in row["recipients"])
        click.echo(
            f"{row['id']:<7} {row['status']:<9} {row['kind']:<16} {row['attempts']:>2}x  {to}"
        )


@outbox.command("show")
@click.argument("outbox_id", type=int)
@click.option("--raw", is_flag=True, help="Print the message exactly as it is sent.")
@pass_context
def show_command(ctx: CliContext, outbox_id: int, raw: bool) -> None:
    """Show one outbound mail with each recipient's delivery state."""
    with ctx.reading() as session:
        row = get_outbox(session, outbox_id)
        view, content = outbox_view(row), row.raw
    if raw:
        click.echo(content.decode("utf-8", "replace"), nl=False)
        return
    click.echo(json.dumps(view, ensure_ascii=False, indent=2))


@outbox.command("retry")
@click.argument("outbox_id", type=int)
@pass_context
def retry_command(ctx: CliContext, outbox_id: int) -> None:
    """Send a failed mail again to the recipients that did not get it."""
    with ctx.transaction() as session:
        row = retry(session, ctx.config, outbox_id, ctx.app.clock.now())
        count = sum(r.state == "pending" for r in row.recipients)
    click.echo(f"Outbound mail {outbox_id} queued again for {count} recipient(s)")
