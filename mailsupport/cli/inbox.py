"""``mailsupport inbox``: every stored message and what became of it, tickets or not."""

from __future__ import annotations

import json
from typing import Any

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.clock import as_utc
from mailsupport.db.inbox import OUTCOMES, list_inbox, outcome_of
from mailsupport.db.models import Inbound, InboundState


def _row(row: Inbound) -> dict[str, Any]:
    reason = row.quarantine_reason if row.state == InboundState.QUARANTINED else row.outcome
    return {
        "id": row.id,
        "received_at": as_utc(row.received_at).isoformat(),
        "message_id": row.message_id,
        "from": row.from_address,
        "outcome": outcome_of(row),
        "reason": reason or "",
        "ticket": row.ticket_number,
    }


@click.group()
def inbox() -> None:
    """Stored mail, whatever became of it."""


@inbox.command("list")
@click.option("--outcome", type=click.Choice([str(o) for o in OUTCOMES]), help="Only these.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="0: all.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def list_command(ctx: CliContext, outcome: str | None, limit: int, as_json: bool) -> None:
    """List stored messages, newest first, with what processing made of them."""
    with ctx.reading() as session:
        rows = [_row(r) for r in list_inbox(session, outcome, limit)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        message_id = f"<{row['message_id']}>" if row["message_id"] else "-"
        ticket = f"#{row['ticket']}" if row["ticket"] is not None else "-"
        click.echo(
            f"{row['id']:<8} {row['received_at']}  {row['outcome']:<11} {ticket:<7} "
            f"{message_id}  {row['from'] or '-'}  {row['reason']}"
        )
