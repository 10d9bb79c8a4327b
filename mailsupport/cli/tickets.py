"""``mailsupport tickets``: list, show, assign, change status."""

from __future__ import annotations

import json
from typing import Any

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.cli.views import ticket_detail, ticket_summary
from mailsupport.domain.actors import cli_actor
from mailsupport.domain.operators import find_operator
from mailsupport.domain.tickets import (
    assign,
    change_status,
    get_ticket,
    list_tickets,
    parse_priority,
    parse_status,
    set_priority,
)


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@click.group()
def tickets() -> None:
    """Look at and change tickets."""


@tickets.command("list")
@click.option("--status", help="Only tickets in this status.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def list_command(ctx: CliContext, status: str | None, as_json: bool) -> None:
    """List tickets, oldest first."""
    with ctx.reading() as session:
        rows = [ticket_summary(t) for t in list_tickets(session, status)]
    if as_json:
        _dump(rows)
        return
    for row in rows:
        assignee = row["assignee"] or "-"
        click.echo(
            f"#{row['number']:<6} {row['status']:<9} {row['priority']:<7} {row['queue']:<12} "
            f"{assignee:<24} {row['requester']:<30} {row['subject']}"
        )


@tickets.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--full", is_flag=True, help="Each mail's whole text, with what it quoted.")
@pass_context
def show_command(ctx: CliContext, number: int, as_json: bool, full: bool) -> None:
    """Show one ticket with its conversation."""
    with ctx.reading() as session:
        detail = ticket_detail(session, get_ticket(session, number))
    if as_json:
        _dump(detail)
        return
    _print_detail(detail, full=full)


def _print_detail(detail: dict[str, Any], *, full: bool) -> None:
    click.echo(f"Ticket #{detail['number']}: {detail['subject']}")
    for key in ("status", "priority", "queue", "requester", "assignee"):
        click.echo(f"  {key:<10} {detail[key] or '-'}")
    people = ", ".join(f"{p['email']} ({p['role']})" for p in detail["participants"])
    click.echo(f"  {'people':<10} {people}")
    for message in detail["messages"]:
        arrow = "<-" if message["direction"] == "in" else "->"
        internal = " [internal]" if message["internal"] else ""
        click.echo(f"\n{arrow} {message['date']} {message['from']}{internal}")
        if message["delivery"] is None:
            click.echo(f"   ({message['thread_reason']})")
        else:
            _print_delivery(message["kind"], message["delivery"])
        for attachment in message["attachments"]:
            click.echo(
                f"   [attachment] {attachment['filename']} "
                f"({attachment['content_type']}, {attachment['size']} bytes)"
            )
        _print_text(message, detail["number"], full=full)


def _print_text(message: dict[str, Any], number: int, *, full: bool) -> None:
    """The message's text; with ``full``, the whole mail as it came, quotes included."""
    text, whole = message["text"].strip(), message["text_full"].strip()
    click.echo(message["text_full"].rstrip() if full else message["text"].rstrip())
    if not full and whole != text:
        click.echo(f"   [shortened: `tickets show {number} --full` shows the whole mail]")


def _print_delivery(kind: str, delivery: dict[str, Any]) -> None:
    """How far a mail we sent got, for each recipient: queued is not delivered."""
    click.echo(f"   ({kind}, outbox {delivery['outbox_id']}: {delivery['status']})")
    for recipient in delivery["recipients"]:
        reply = " ".join(str(p) for p in (recipient["code"], recipient["detail"]) if p)
        said = f" ({reply})" if reply and recipient["status"] != "sent" else ""
        click.echo(f"   to {recipient['address']}: {recipient['status']}{said}")


@tickets.command("assign")
@click.argument("number", type=int)
@click.argument("operator")
@pass_context
def assign_command(ctx: CliContext, number: int, operator: str) -> None:
    """Assign a ticket to an operator (email, name, or the part of the email before @)."""
    with ctx.transaction() as session:
        ticket = get_ticket(session, number, for_update=True)
        who = find_operator(session, operator)
        changed = assign(session, ticket, who, actor=cli_actor(), now=ctx.app.clock.now())
    click.echo(f"#{number} assigned to {who.email}" if changed else f"#{number} unchanged")


@tickets.command("status")
@click.argument("number", type=int)
@click.argument("status")
@pass_context
def status_command(ctx: CliContext, number: int, status: str) -> None:
    """Change a ticket's status (new, open, waiting, resolved, closed)."""
    wanted = parse_status(status)
    with ctx.transaction() as session:
        ticket = get_ticket(session, number, for_update=True)
        changed = change_status(session, ticket, wanted, actor=cli_actor(), now=ctx.app.clock.now())
    click.echo(f"#{number} is now {wanted}" if changed else f"#{number} is already {wanted}")


@tickets.command("priority")
@click.argument("number", type=int)
@click.argument("priority")
@pass_context
def priority_command(ctx: CliContext, number: int, priority: str) -> None:
    """Change a ticket's priority (low, normal, high, urgent)."""
    wanted = parse_priority(priority)
    with ctx.transaction() as session:
        ticket = get_ticket(session, number, for_update=True)
        changed = set_priority(session, ticket, wanted, actor=cli_actor(), now=ctx.app.clock.now())
    click.echo(f"#{number} priority {wanted}" if changed else f"#{number} unchanged")
