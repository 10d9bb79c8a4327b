"""``mailsupport quarantine``: messages the pipeline could not process, and their replay."""

from __future__ import annotations

import json
import sys

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.clock import as_utc
from mailsupport.db.models import Inbound
from mailsupport.pipeline.quarantine import get_inbound, list_quarantined, replay
from mailsupport.pipeline.runner import Pipeline


def _row(row: Inbound) -> dict[str, object]:
    return {
        "id": row.id,
        "message_id": row.message_id,
        "channel": row.channel,
        "received_at": as_utc(row.received_at).isoformat(),
        "size": row.size,
        "state": row.state,
        "reason": row.quarantine_reason,
    }


@click.group()
def quarantine() -> None:
    """Quarantined messages."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def list_command(ctx: CliContext, as_json: bool) -> None:
    """List quarantined messages with their reasons."""
    with ctx.reading() as session:
        rows = [_row(r) for r in list_quarantined(session)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        message_id = f"<{row['message_id']}>" if row["message_id"] else "-"
        click.echo(f"{row['id']:<8} {row['received_at']}  {message_id}  {row['reason']}")


@quarantine.command("show")
@click.argument("inbound_id", type=int)
@click.option("--raw", is_flag=True, help="Print the message exactly as received.")
@pass_context
def show_command(ctx: CliContext, inbound_id: int, raw: bool) -> None:
    """Show a stored message's state and reason (or its raw bytes)."""
    with ctx.reading() as session:
        row = get_inbound(session, inbound_id)
        data, content = _row(row), row.raw
    if raw:
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
        return
    for key, value in data.items():
        click.echo(f"{key:<12} {value}")
    head = content[:2000].decode("utf-8", "replace")
    click.echo("\n" + head.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0])


@quarantine.command("replay")
@click.argument("inbound_id", type=int)
@pass_context
def replay_command(ctx: CliContext, inbound_id: int) -> None:
    """Run the pipeline on a quarantined message again."""
    outcome = replay(Pipeline(ctx.app.factory, ctx.config, ctx.app.clock), inbound_id)
    if outcome is None:
        click.echo(f"{inbound_id}: taken by another worker")
        return
    click.echo(f"{inbound_id}: {outcome.state}: {outcome.detail}")
    if outcome.state != "processed":
        raise SystemExit(1)
