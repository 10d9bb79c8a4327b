"""Bounce step: link a delivery report to the outbound mail it is about.

Our mail leaves with a signed bounce address naming its outbox row, so a DSN is matched
through the address it comes back to; a report that lost it (forwarded, rewritten) is matched
by the returned Message-ID. A hard bounce fails that recipient and, repeated, stops mail to the
address; every bounce is recorded on the ticket. A bounce never opens a ticket or gets a reply.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.dsn import BounceReport, FailedRecipient, Severity, parse_bounce
from mailsupport.core.verp import parse_bounce_address
from mailsupport.db.models import Outbox, OutboxRecipient, RecipientState, Ticket
from mailsupport.domain.actors import SYSTEM
from mailsupport.domain.contacts import find_contact
from mailsupport.domain.settings import server_secret
from mailsupport.domain.tickets import record_event
from mailsupport.pipeline.context import Incoming


def _addressed_to(incoming: Incoming) -> Iterable[str]:
    parsed = incoming.parsed
    yield from incoming.envelope_to
    yield from (a.email for a in (*parsed.to, *parsed.cc))
    for name in ("Delivered-To", "X-Original-To"):
        yield from (v.strip().strip("<>").lower() for v in parsed.header_all(name))


def find_outbox(
    session: Session, incoming: Incoming, report: BounceReport | None, config: Config
) -> Outbox | None:
    secret = server_secret(session, config)
    for address in _addressed_to(incoming):
        outbox_id = parse_bounce_address(address, config.support.address, secret)
        if outbox_id is not None:
            return session.get(Outbox, outbox_id)
    if report is not None and report.original_message_id:
        return session.execute(
            select(Outbox).where(Outbox.message_id == report.original_message_id)
        ).scalar_one_or_none()
    return None


def _recipient(outbox: Outbox, failed: FailedRecipient) -> OutboxRecipient | None:
    for recipient in outbox.recipients:
        if recipient.address == failed.address:
            return recipient
    # A report that names no (or a rewritten) address is about the only recipient, if one.
    return outbox.recipients[0] if len(outbox.recipients) == 1 else None


@dataclass(frozen=True)
class LinkedBounce:
    """What a bounce was found to be about, and what was done with it."""

    detail: str  # for the stored message's outcome
    linked: bool  # it is about mail of ours
    ticket_number: int | None = None  # the ticket of that mail


def link_bounce(
    session: Session, incoming: Incoming, raw: bytes, config: Config, now: datetime
) -> LinkedBounce:
    """Apply a bounce to the outbox."""
    report = parse_bounce(raw)
    outbox = find_outbox(session, incoming, report, config)
    if outbox is None:
        return LinkedBounce("bounce about no mail of ours", linked=False)
    failures = report.recipients if report else ()
    if not failures and len(outbox.recipients) == 1:
        failures = (
            FailedRecipient(outbox.recipients[0].address, Severity.HARD, "", "unparsed bounce"),
        )
    ticket = session.get(Ticket, outbox.ticket_id) if outbox.ticket_id else None
    applied = [
        _apply_failure(session, outbox, ticket, recipient, failed, config=config, now=now)
        for failed in failures
        if (recipient := _recipient(outbox, failed)) is not None
    ]
    detail = f"bounce of outbox {outbox.id}: " + (", ".join(applied) or "no recipient identified")
    return LinkedBounce(detail, linked=True, ticket_number=ticket.number if ticket else None)


def _apply_failure(
    session: Session,
    outbox: Outbox,
    ticket: Ticket | None,
    recipient: OutboxRecipient,
    failed: FailedRecipient,
    *,
    config: Config,
    now: datetime,
) -> str:
    if failed.severity is Severity.HARD and recipient.state != RecipientState.BOUNCED:
        recipient.state = RecipientState.BOUNCED
        recipient.detail = f"bounced: {failed.status} {failed.diagnostic}".strip()
        recipient.updated_at = now
        _count_hard_bounce(session, recipient.address, config, now)
    if ticket is not None:
        record_event(
            session,
            ticket,
            actor=SYSTEM,
            kind="bounce",
            now=now,
            new=recipient.address,
            data={
                "outbox_id": outbox.id,
                "severity": failed.severity,
                "status": failed.status,
                "diagnostic": failed.diagnostic,
            },
        )
    return f"{recipient.address} ({failed.severity})"


def _count_hard_bounce(session: Session, address: str, config: Config, now: datetime) -> None:
    contact = find_contact(session, address)
    if contact is None:
        return
    contact.hard_bounces += 1
    if (
        contact.hard_bounces >= config.limits.hard_bounces_before_stop
        and not contact.undeliverable_since
    ):
        contact.undeliverable_since = now
