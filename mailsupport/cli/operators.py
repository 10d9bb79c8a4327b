"""``mailsupport operators``: the people who answer tickets."""

from __future__ import annotations

import json

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.domain.operators import add_operator, list_operators


@click.group()
def operators() -> None:
    """Manage operators."""


@operators.command("add")
@click.argument("email")
@click.option("--name", required=True, help="How the operator is shown (e.g. 'Alice').")
@pass_context
def add_command(ctx: CliContext, email: str, name: str) -> None:
    """Add an operator."""
    with ctx.transaction() as session:
        operator = add_operator(session, email, name, ctx.app.clock.now())
    click.echo(f"Added operator {operator.name} <{operator.email}>")


@operators.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def list_command(ctx: CliContext, as_json: bool) -> None:
    """List operators."""
    with ctx.transaction() as session:
        rows = [
            {"email": o.email, "name": o.name, "active": o.active} for o in list_operators(session)
        ]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        state = "" if row["active"] else "  (inactive)"
        click.echo(f"{row['email']:<32} {row['name']}{state}")
