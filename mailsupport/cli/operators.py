"""``mailsupport operators``: the people who answer tickets, their queues and addresses."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy.orm import Session

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.db.models import Operator
from mailsupport.domain.operators import (
    add_address,
    add_operator,
    addresses_of,
    find_operator,
    join_queue,
    leave_queue,
    list_operators,
    queues_of,
    refuse_operator_address,
    remove_address,
    remove_operator,
)
from mailsupport.domain.queues import existing_queue
from mailsupport.domain.settings import rotate_reply_key
from mailsupport.domain.tickets import find_queue


def _view(session: Session, operator: Operator) -> dict[str, Any]:
    return {
        "email": operator.email,
        "name": operator.name,
        "active": operator.active,
        "queues": queues_of(session, operator),
        "addresses": addresses_of(session, operator)[1:],
    }


@click.group()
def operators() -> None:
    """Manage operators."""


@operators.command("add")
@click.argument("email")
@click.option("--name", required=True, help="How the operator is shown (e.g. 'Alice').")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="A queue they work in; may repeat. Default: [support] default_queue.",
)
@click.option("--create", is_flag=True, help="Create a queue given that does not exist yet.")
@pass_context
def add_command(
    ctx: CliContext, email: str, name: str, queues: tuple[str, ...], create: bool
) -> None:
    """Add an operator, in the default queue unless --queue says otherwise."""
    refuse_operator_address(ctx.config, email)
    default = ctx.config.support.default_queue
    with ctx.transaction() as session:
        operator = add_operator(session, email, name, ctx.app.clock.now())
        joined = [existing_queue(session, q, create=create) for q in queues or (default,)]
        for queue in joined:
            join_queue(session, operator, queue)
    names = sorted({queue.name for queue in joined})
    where = f"queue {names[0]}" if len(names) == 1 else f"queues {', '.join(names)}"
    note = "" if queues else " (the default queue; --queue chooses others)"
    click.echo(f"Added operator {operator.name} <{operator.email}> in {where}{note}")


@operators.command("remove")
@click.argument("operator")
@pass_context
def remove_command(ctx: CliContext, operator: str) -> None:
    """Deactivate an operator (their history is kept)."""
    with ctx.transaction() as session:
        who = remove_operator(session, operator)
    click.echo(f"Deactivated operator {who.email}")


@operators.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def list_command(ctx: CliContext, as_json: bool) -> None:
    """List operators with their queues and alternate addresses."""
    with ctx.reading() as session:
        rows = [_view(session, o) for o in list_operators(session)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        state = "" if row["active"] else "  (inactive)"
        queues = ",".join(row["queues"]) or "-"
        extra = f"  also {', '.join(row['addresses'])}" if row["addresses"] else ""
        click.echo(f"{row['email']:<32} {row['name']:<20} {queues}{extra}{state}")


@operators.command("rotate-secret")
@pass_context
def rotate_secret_command(ctx: CliContext) -> None:
    """Replace the key of reply addresses: every one sent so far stops acting."""
    with ctx.transaction() as session:
        rotate_reply_key(session, ctx.config)
    click.echo(
        "New reply-address key: the reply addresses sent so far no longer act; each operator"
        " gets a fresh one with their next mail (bounce addresses are not affected)."
    )


@operators.group("queue")
def queue_group() -> None:
    """An operator's queues."""


@queue_group.command("add")
@click.argument("operator")
@click.argument("queue")
@click.option("--create", is_flag=True, help="Create the queue if it does not exist yet.")
@pass_context
def queue_add(ctx: CliContext, operator: str, queue: str, create: bool) -> None:
    """Put an operator in a queue (refused if there is no such queue, unless --create)."""
    with ctx.transaction() as session:
        who = find_operator(session, operator)
        joined = existing_queue(session, queue, create=create)
        join_queue(session, who, joined)
    click.echo(f"{who.email} works in {joined.name}")


@queue_group.command("remove")
@click.argument("operator")
@click.argument("queue")
@pass_context
def queue_remove(ctx: CliContext, operator: str, queue: str) -> None:
    """Take an operator out of a queue."""
    with ctx.transaction() as session:
        who = find_operator(session, operator)
        leave_queue(session, who, find_queue(session, queue))
    click.echo(f"{who.email} left {queue}")


@operators.group("address")
def address_group() -> None:
    """An operator's alternate addresses."""


@address_group.command("add")
@click.argument("operator")
@click.argument("address")
@pass_context
def address_add(ctx: CliContext, operator: str, address: str) -> None:
    """Let an operator also write from ADDRESS."""
    refuse_operator_address(ctx.config, address)
    with ctx.transaction() as session:
        who = find_operator(session, operator)
        add_address(session, who, address)
    click.echo(f"{who.email} also writes from {address.lower()}")


@address_group.command("remove")
@click.argument("operator")
@click.argument("address")
@pass_context
def address_remove(ctx: CliContext, operator: str, address: str) -> None:
    """Forget an alternate address."""
    with ctx.transaction() as session:
        who = find_operator(session, operator)
        remove_address(session, who, address)
    click.echo(f"{who.email} no longer writes from {address.lower()}")
