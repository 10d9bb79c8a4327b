"""Notifications derived from ticket events, queued in the transaction that recorded them.

Whoever changed a ticket (the pipeline, the CLI, later the scheduler and operators' mail),
the same events produce the same mail: an acknowledgement when a customer's mail opens a
ticket, a notice to the customer and participants when the status changes. Every automatic
mail first passes the loop breakers of ``policy``; a mail that is held back is recorded as an
event with the reason, so nobody wonders why a customer got nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsupport.clock import Clock
from mailsupport.config import Config
from mailsupport.core.message import Address, MailKind
from mailsupport.core.outmail import (
    InvalidAddressError,
    OutgoingMail,
)
from mailsupport.core.render import RenderError, Templates
from mailsupport.db.models import Contact, Direction, Message, Operator, Ticket
from mailsupport.domain.tickets import (
    RecordedEvent,
    participants,
    take_new_events,
)
from mailsupport.outbound.outbox import enqueue
from mailsupport.outbound.policy import (
    automatic_mail_refusal,
    operator_mail_refusal,
    record_held_back,
)
from mailsupport.outbound.staff import StaffMail, Thread, ticket_thread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Notice:
    kind: str  # the outbox kind
    template: str
    context: dict[str, Any]


class Notifier:
    """Turns the events of one transaction into outbox rows of the same transaction."""

    def __init__(self, config: Config, clock: Clock, templates: Templates | None = None) -> None:
        self.config = config
        self.clock = clock
        override = (
            Path(config.notifications.templates_dir) if config.notifications.templates_dir else None
        )
        self.templates = templates or Templates(override)
        self.staff = StaffMail(config, self.templates)

    def flush(self, session: Session) -> None:
        """Derive mail from the events recorded so far in ``session``; call before commit."""
        by_ticket: dict[int, list[RecordedEvent]] = defaultdict(list)
        for event in take_new_events(session):
            by_ticket[event.ticket_id].append(event)
        for ticket_id, events in by_ticket.items():
            ticket = session.get(Ticket, ticket_id)
            if ticket is not None:
                self._for_ticket(session, ticket, events)
        # The events of the mail just queued derive no mail of their own; left pending, they
        # would be read again by the next flush of a transaction that goes on.
        take_new_events(session)

    def _for_ticket(self, session: Session, ticket: Ticket, events: list[RecordedEvent]) -> None:
        created = any(event.kind == "created" for event in events)
        for event in events:
            if _inbound_message(event) and created:
                self._acknowledge(session, ticket, event)
                self._tell_operators(session, ticket, event, "operator_new_ticket")
                created = False
            elif _inbound_message(event) and event.actor.startswith("contact:"):
                self._tell_operators(session, ticket, event, "operator_follow_up")
            elif event.kind == "note":
                self._tell_operators(session, ticket, event, "operator_note")
            elif event.kind == "status" and self._announces(event):
                self._status_notices(session, ticket, event)

    # --- operators ------------------------------------------------------------------------

    def _tell_operators(
        self, session: Session, ticket: Ticket, event: RecordedEvent, template: str
    ) -> None:
        """Mail the operators working on the ticket the new text, signed for their replies.

        A responder's repeated mail (``loop``) was a person's mail until it repeated itself:
        what it would have caused is recorded as held back.
        """
        loop = event.data.get("loop")
        if not loop and event.data.get("kind", MailKind.NORMAL) not in _WORTH_TELLING:
            return
        # Most tickets of a team without queue members or an assignee notify nobody: ask who
        # before loading the message.
        recipients = list(self.staff.operators_for(session, ticket))
        if not recipients and template != "operator_note":
            return
        message = session.get(Message, event.data.get("message_row") or 0)
        if message is None:
            return
        if template == "operator_note":
            recipients = self._colleagues(session, ticket, message.operator_id)
        now = self.clock.now()
        spam = str(event.data.get("spam", ""))
        for operator in recipients:
            if operator.id == message.operator_id:
                continue
            refusal = loop or operator_mail_refusal(
                session, self.config, ticket.id, operator.email, now
            )
            if refusal is not None:
                self._held_back(session, ticket, template, operator.email, refusal, now)
            else:
                self._mail_operator(session, ticket, operator, template, message, spam, now)

    def _mail_operator(
        self,
        session: Session,
        ticket: Ticket,
        operator: Operator,
        template: str,
        message: Message,
        spam: str,
        now: datetime,
    ) -> None:
        try:
            self.staff.to_operator(
                session,
                ticket,
                operator,
                template,
                {
                    "text": message.text,
                    "author": message.from_name or message.from_email,
                    "spam": spam,
                },
                now=now,
                in_reply_to=message.message_id or None,
            )
        except (InvalidAddressError, RenderError) as exc:
            log.error("ticket #%s: cannot mail operator %s: %s", ticket.number, operator.email, exc)

    def _colleagues(
        self, session: Session, ticket: Ticket, author_id: int | None
    ) -> list[Operator]:
        """The other operators on a ticket: who works on it and who has written on it."""
        writers = (
            session.execute(
                select(Operator)
                .join(Message, Message.operator_id == Operator.id)
                .where(Message.ticket_id == ticket.id, Operator.active.is_(True))
            )
            .scalars()
            .all()
        )
        found = {o.id: o for o in (*self.staff.operators_for(session, ticket), *writers)}
        found.pop(author_id or 0, None)
        return list(found.values())

    def _announces(self, event: RecordedEvent) -> bool:
        # Telling a customer that their own reply reopened the ticket is noise.
        return event.new in self.config.notifications.statuses and not event.actor.startswith(
            "contact:"
        )

    # --- acknowledgement -------------------------------------------------------------------

    def _acknowledge(self, session: Session, ticket: Ticket, trigger: RecordedEvent) -> None:
        screened = trigger.data.get("loop")
        if screened is None and trigger.data.get("no_auto_reply"):
            evidence = ", ".join(trigger.data.get("screen_reasons", [])) or "machine mail"
            screened = f"screened: {evidence}"
        customer_id = str(trigger.data.get("message_id") or "")
        self._automatic(
            session,
            ticket,
            ticket.requester,
            _Notice("acknowledgement", "acknowledgement", {}),
            in_reply_to=customer_id or None,
            references=(customer_id,) if customer_id else (),
            refusal=screened,
        )

    # --- status notices --------------------------------------------------------------------

    def _status_notices(self, session: Session, ticket: Ticket, event: RecordedEvent) -> None:
        thread = ticket_thread(session, ticket)
        in_reply_to, references = thread.in_reply_to, thread.references
        extra = {"old_status": event.old or "", "new_status": event.new or ""}
        notice = _Notice("status", f"status_{event.new}", extra)
        delay = timedelta(seconds=self.config.notifications.combine_seconds)
        for contact in _audience(session, ticket):
            # A burst of changes (waiting, then resolved a minute later) becomes one mail
            # with the final status: each notice replaces the previous, unsent one.
            self._automatic(
                session,
                ticket,
                contact,
                notice,
                in_reply_to=in_reply_to,
                references=references,
                delay=delay,
                coalesce_key=f"status:{ticket.id}:{contact.email}"[:64],
            )

    def _automatic(
        self,
        session: Session,
        ticket: Ticket,
        contact: Contact,
        notice: _Notice,
        *,
        in_reply_to: str | None,
        references: tuple[str, ...],
        refusal: str | None = None,
        delay: timedelta = timedelta(0),
        coalesce_key: str | None = None,
    ) -> None:
        """Queue one automatic mail, unless a loop breaker or a composing error holds it back."""
        now = self.clock.now()
        refusal = refusal or automatic_mail_refusal(session, self.config, contact, now)
        if refusal is None:
            try:
                mail = self._compose(ticket, contact, notice, now, in_reply_to, references)
            except (InvalidAddressError, RenderError) as exc:
                refusal = f"cannot compose it: {exc}"
        if refusal is not None:
            self._held_back(session, ticket, notice.template, contact.email, refusal, now)
            return
        enqueue(
            session,
            self.config,
            mail,
            ticket=ticket,
            kind=notice.kind,
            automatic=True,
            now=now,
            send_after=now + delay,
            coalesce_key=coalesce_key,
        )

    # --- shared ----------------------------------------------------------------------------

    def _compose(
        self,
        ticket: Ticket,
        contact: Contact,
        notice: _Notice,
        now: datetime,
        in_reply_to: str | None,
        references: tuple[str, ...],
    ) -> OutgoingMail:
        address = self.config.address_for_queue(ticket.queue.name)
        return self.staff.templated(
            ticket,
            Address(contact.email, contact.name),
            notice.template,
            language=contact.language or self.config.support.language,
            context=notice.context,
            now=now,
            thread=Thread(in_reply_to, references),
            reply_to=address,
            auto_submitted="auto-replied",
        )

    def _held_back(
        self, session: Session, ticket: Ticket, what: str, address: str, reason: str, now: datetime
    ) -> None:
        log.info("ticket #%s: no %s to %s: %s", ticket.number, what, address, reason)
        record_held_back(session, ticket, what, address, reason, now)


# Operators hear about customer mail, list mail (a support address may be a mailing list) and
# other systems' notices; bounces, auto-replies and abuse reports are on the ticket for whoever
# looks.
_WORTH_TELLING = frozenset({MailKind.NORMAL, MailKind.LIST, MailKind.AUTOMATIC})


def _inbound_message(event: RecordedEvent) -> bool:
    return event.kind == "message" and event.data.get("direction") == Direction.IN


def _audience(session: Session, ticket: Ticket) -> Iterable[Contact]:
    """The requester and the people copied: everyone a customer-facing notice goes to."""
    return [p.contact for p in participants(session, ticket)]
