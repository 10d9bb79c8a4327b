"""``mailsupport participants``: who, besides the operators, gets a ticket's mail."""

from __future__ import annotations

import click

from mailsupport.cli.context import CliContext, pass_context
from mailsupport.core.message import Address
from mailsupport.domain.actors import cli_actor
from mailsupport.domain.contacts import get_or_create_contact, refuse_own_address, typed_email
from mailsupport.domain.operators import refuse_operator_as_participant
from mailsupport.domain.tickets import add_participant, get_ticket, remove_participant


@click.group()
def participants() -> None:
    """Add people to a ticket's conversation, or take them off it."""


@participants.command("add")
@click.argument("number", type=int)
@click.argument("email")
@click.option("--name", default="", help="Their name, if mailsupport does not know it yet.")
@pass_context
def add_command(ctx: CliContext, number: int, email: str, name: str) -> None:
    """Copy EMAIL on ticket NUMBER: they get its replies and notices from now on."""
    email = typed_email(email)
    refuse_own_address(ctx.config, email)
    now = ctx.app.clock.now()
    with ctx.transaction() as session:
        ticket = get_ticket(session, number, for_update=True)
        refuse_operator_as_participant(session, email)
        contact = get_or_create_contact(session, Address(email, name.strip()), now)
        added = add_participant(session, ticket, contact, role="cc", actor=cli_actor(), now=now)
    click.echo(f"{'Added' if added else 'Already on'} ticket #{number}: {email}")


@participants.command("remove")
@click.argument("number", type=int)
@click.argument("email")
@pass_context
def remove_command(ctx: CliContext, number: int, email: str) -> None:
    """Take EMAIL off ticket NUMBER (not its requester)."""
    with ctx.transaction() as session:
        ticket = get_ticket(session, number, for_update=True)
        remove_participant(session, ticket, email, actor=cli_actor(), now=ctx.app.clock.now())
    click.echo(f"Removed from ticket #{number}: {email.strip().lower()}")
