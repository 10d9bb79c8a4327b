"""Bounce step: link a delivery report to the outbound mail it is about.

Our mail leaves with a signed bounce address naming its outbox row, so a DSN is matched
through the address it comes back to; a report that lost it (forwarded, rewritten) is matched
by the returned Message-ID. A hard bounce fails that recipient and, repeated, stops mail to the
address; every bounce is recorded on the ticket. A bounce never opens a ticket or gets a reply.

Behind an MTA our relay accepts everything, so a bounce is how a final failure comes back: the
ticket's operators are told of it as of a refusal by the relay, once per recipient of a mail
however many reports about it arrive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.dsn import BounceReport, FailedRecipient, Severity, parse_bounce
from mailsupport.core.verp import parse_bounce_address
from mailsupport.db.models import Outbox, OutboxRecipient, RecipientState, Ticket
from mailsupport.domain.actors import SYSTEM
from mailsupport.domain.contacts import find_contact
from mailsupport.domain.settings import server_secret
from mailsupport.domain.tickets import record_event
from mailsupport.outbound.failures import FailureReport
from mailsupport.pipeline.context import Incoming

# A recipient in one of these states has been reported to the operators already.
_FAILED = (RecipientState.BOUNCED, RecipientState.FAILED)


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
    session: Session,
    incoming: Incoming,
    raw: bytes,
    config: Config,
    failures: FailureReport,
    now: datetime,
) -> LinkedBounce:
    """Apply a bounce to the outbox."""
    report = parse_bounce(raw)
    outbox = find_outbox(session, incoming, report, config)
    if outbox is None:
        return LinkedBounce("bounce about no mail of ours", linked=False)
    reported = report.recipients if report else ()
    if not reported and len(outbox.recipients) == 1:
        reported = (
            FailedRecipient(outbox.recipients[0].address, Severity.HARD, "", "unparsed bounce"),
        )
    ticket = session.get(Ticket, outbox.ticket_id) if outbox.ticket_id else None
    pairs = [
        (recipient, failed)
        for failed in reported
        if (recipient := _recipient(outbox, failed)) is not None
    ]
    newly_failed = [
        recipient
        for recipient, failed in pairs
        if _apply_failure(session, outbox, ticket, recipient, failed, config=config, now=now)
    ]
    if ticket is not None:
        failures.tell_operators(session, ticket, outbox, newly_failed, now)
    said = ", ".join(f"{recipient.address} ({failed.severity})" for recipient, failed in pairs)
    detail = f"bounce of outbox {outbox.id}: {said or 'no recipient identified'}"
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
) -> bool:
    """Record one reported failure; True when it is news: the recipient had not failed yet."""
    final = failed.severity is Severity.HARD and _fail(session, recipient, failed, now)
    if final:
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
    return final


def _fail(
    session: Session, recipient: OutboxRecipient, failed: FailedRecipient, now: datetime
) -> bool:
    """Mark the recipient bounced, unless an earlier report or the relay failed it already."""
    # One conditional UPDATE: two reports about one recipient, taken by two workers at once,
    # must not both find it still delivered (and both tell the operators).
    statement = (
        update(OutboxRecipient)
        .where(OutboxRecipient.id == recipient.id, OutboxRecipient.state.not_in(_FAILED))
        .values(
            state=RecipientState.BOUNCED,
            detail=f"bounced: {failed.status} {failed.diagnostic}".strip(),
            updated_at=now,
        )
        .execution_options(synchronize_session="evaluate")
    )
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount == 1


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
