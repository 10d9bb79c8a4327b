"""Mail that could not be delivered: recorded on its ticket, and the people on it told.

When a recipient of a ticket's mail finally fails (a 5xx, or still failing when the sender
gives up after ``give_up_after_hours``), the failure is recorded on the ticket as a
``delivery_failed`` event, and in the same transaction the operators get one mail about it
(as they do when a delivery report says the relay could not deliver it, see
``pipeline.bounce``):
the ticket's queue's operators and its assignee, or, when the ticket has neither, every active
operator, so that somebody always hears of it. The customer never gets one, and neither does
an operator whose own address is the one that failed.

A failure notice that itself cannot be delivered is recorded like any other failure but tells
nobody: otherwise a dead operator mailbox would be written to for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.outmail import InvalidAddressError
from mailsupport.core.render import RenderError, Templates
from mailsupport.db.models import Operator, Outbox, OutboxRecipient, RecipientState, Ticket
from mailsupport.domain.actors import SYSTEM
from mailsupport.domain.operators import queue_members
from mailsupport.domain.tickets import record_event
from mailsupport.outbound.staff import StaffMail

log = logging.getLogger(__name__)

# The outbox kind (and template) of the notice to operators; its own failures tell nobody.
NOTICE = "operator_delivery_failed"


class FailureReport:
    """Records failed recipients on their ticket and tells its operators, in the caller's
    transaction."""

    def __init__(self, config: Config, staff: StaffMail | None = None) -> None:
        self.config = config
        self._staff = staff

    def _staff_mail(self) -> StaffMail:
        if self._staff is None:
            override = self.config.notifications.templates_dir
            self._staff = StaffMail(self.config, Templates(Path(override) if override else None))
        return self._staff

    def report(
        self, session: Session, row: Outbox, failed: Sequence[OutboxRecipient], now: datetime
    ) -> None:
        ticket = session.get(Ticket, row.ticket_id) if row.ticket_id else None
        where = f"ticket #{ticket.number}" if ticket is not None else "no ticket"
        for recipient in failed:
            log.warning(
                "outbox %s <%s> (%s): delivery to %s failed: %s %s",
                row.id,
                row.message_id,
                where,
                recipient.address,
                recipient.code,
                recipient.detail,
            )
            if ticket is not None:
                record_event(
                    session,
                    ticket,
                    actor=SYSTEM,
                    kind="delivery_failed",
                    now=now,
                    new=recipient.address,
                    data={
                        "outbox_id": row.id,
                        "message_id": row.message_id,
                        "code": recipient.code,
                        "detail": recipient.detail,
                        "queue": ticket.queue.name,
                    },
                )
        if ticket is not None:
            self.tell_operators(session, ticket, row, failed, now)

    def tell_operators(
        self,
        session: Session,
        ticket: Ticket,
        row: Outbox,
        failed: Sequence[OutboxRecipient],
        now: datetime,
    ) -> None:
        """Mail the ticket's operators that ``failed`` will not get ``row``; the caller tells
        them once per recipient. A notice of ours that failed tells nobody."""
        if not failed or row.kind == NOTICE:
            return
        addresses = {recipient.address.lower() for recipient in failed}
        context = _notice_context(row, failed)
        for operator in operators_to_tell(session, ticket):
            if operator.email.lower() in addresses:
                continue  # the address that failed: it would fail again
            try:
                self._staff_mail().to_operator(session, ticket, operator, NOTICE, context, now=now)
            except (InvalidAddressError, RenderError) as exc:
                log.error(
                    "ticket #%s: cannot tell %s that outbox %s failed: %s",
                    ticket.number,
                    operator.email,
                    row.id,
                    exc,
                )


def operators_to_tell(session: Session, ticket: Ticket) -> list[Operator]:
    """The queue's operators and the assignee; every active operator when there are none."""
    found = {operator.id: operator for operator in queue_members(session, ticket.queue_id)}
    if ticket.assignee is not None and ticket.assignee.active:
        found.setdefault(ticket.assignee.id, ticket.assignee)
    if not found:
        everyone = select(Operator).where(Operator.active.is_(True)).order_by(Operator.email)
        return list(session.execute(everyone).scalars())
    return sorted(found.values(), key=lambda operator: operator.email)


def _notice_context(row: Outbox, failed: Sequence[OutboxRecipient]) -> dict[str, Any]:
    headers = BytesHeaderParser(policy=default_policy).parsebytes(row.raw)
    return {
        "mail": {
            "outbox_id": row.id,
            "kind": row.kind,
            "message_id": row.message_id,
            "subject": str(headers.get("Subject", "")),
            "attempts": row.attempts,
        },
        "failures": [{"address": r.address, "reply": _reply(r)} for r in failed],
    }


def _reply(recipient: OutboxRecipient) -> str:
    if recipient.state == RecipientState.BOUNCED:
        return recipient.detail or "bounced"  # the relay's code was its 250
    return " ".join(str(part) for part in (recipient.code, recipient.detail) if part)
