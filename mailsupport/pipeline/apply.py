"""Apply step: carry out the threading decision on the tickets.

A new ticket gets its number, subject, requester, participants and queue; a follow-up joins
its ticket and brings a ticket waiting on the customer back to ``open``. Either way the mail
becomes a message of the ticket, with the reason it was attached there. A follow-up keeps only
its new text: the history it quotes is on the ticket already, and the whole mail stays in
``inbound_raw`` for ``tickets show --full``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from mailsupport.clock import as_utc
from mailsupport.config import Config
from mailsupport.core.fingerprint import attachment_digest
from mailsupport.core.language import detect_language
from mailsupport.core.message import MailKind
from mailsupport.core.quotes import follow_up_text
from mailsupport.core.render import RenderError, Templates
from mailsupport.core.subject import clean_subject, strip_prefixes, tag_pattern
from mailsupport.core.threads import Action, Decision
from mailsupport.db.models import Contact, Direction, Ticket, TicketStatus
from mailsupport.domain.actors import contact_actor
from mailsupport.domain.messages import NewMessage, add_message
from mailsupport.domain.tickets import (
    add_participant,
    change_status,
    get_or_create_queue,
    get_ticket,
    is_participant,
    open_ticket,
    record_event,
    touch,
)
from mailsupport.errors import MessageParseError
from mailsupport.pipeline.attachments import store_attachments
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.identify import People
from mailsupport.pipeline.loops import Repetition, check_customer_mail

_REOPENED_BY_CUSTOMER = {TicketStatus.WAITING, TicketStatus.RESOLVED}
_EARLIEST_SANE_DATE = datetime(1990, 1, 1, tzinfo=UTC)


def queue_name(incoming: Incoming, config: Config) -> str:
    """The channel's queue if it set one, else that of the first of our addresses in To, then
    Cc; for mail naming none of ours there (Bcc), the first in the configuration of those it
    was delivered to.

    Not the envelope first: an MTA delivering to each recipient on its own (Postfix's pipe
    with a recipient limit of 1) stores whichever copy comes first, and the others are
    duplicates, so the envelope would make the queue depend on delivery order.
    """
    if incoming.queue:
        return incoming.queue
    parsed = incoming.parsed
    for address in (a.email for a in (*parsed.to, *parsed.cc)):
        queue = config.queue_for(address)
        if queue is not None:
            return queue
    delivered = {config.base_address(address) for address in _delivered_to(incoming)}
    for address in (config.support.address, *config.queues):
        if address in delivered:
            return config.queue_for(address) or config.support.default_queue
    return config.support.default_queue


def _delivered_to(incoming: Incoming) -> list[str]:
    parsed = incoming.parsed
    traced = [*parsed.header_all("Delivered-To"), *parsed.header_all("X-Original-To")]
    return [*incoming.envelope_to, *(value.strip("<> ").lower() for value in traced)]


def message_date(incoming: Incoming) -> datetime:
    """The Date header unless it is missing or absurd; then when we received the mail."""
    received = as_utc(incoming.received_at)
    date = incoming.parsed.date
    if date is None or date < _EARLIEST_SANE_DATE or date > received + timedelta(days=1):
        return received
    return date


def apply(
    session: Session,
    *,
    incoming: Incoming,
    people: People,
    decision: Decision,
    config: Config,
    now: datetime,
) -> Ticket | None:
    if decision.action is Action.NO_TICKET:
        return None
    sender = people.sender
    if sender is None:
        raise MessageParseError("the message has no usable From address")
    actor = contact_actor(sender.email)
    text = _new_text(incoming, decision)
    digests = [attachment_digest(a.content) for a in incoming.parsed.attachments]
    incoming, repetition = check_customer_mail(
        session, incoming, sender.email, (text, digests), config, now
    )
    if decision.action is Action.NEW_TICKET:
        ticket = open_ticket(
            session,
            subject=clean_subject(incoming.parsed.subject, config.support.tag),
            requester=sender,
            queue=get_or_create_queue(session, queue_name(incoming, config)),
            actor=actor,
            now=now,
        )
    else:
        assert decision.ticket_number is not None
        ticket = get_ticket(session, decision.ticket_number, for_update=True)
        add_participant(session, ticket, sender, role="cc", actor=actor, now=now)
        _reopen_if_waiting(session, ticket, incoming, actor, now)
    _add_copied(session, ticket, people, decision, actor, now)
    _learn_language(sender, incoming, text, config)
    _add_message(
        session, ticket, incoming, sender, (text, digests), repetition, decision.reason, now
    )
    return ticket


def _learn_language(contact: Contact, incoming: Incoming, text: str, config: Config) -> None:
    """The first mail of a customer that shows their language sets it for every later mail.

    Read from the subject and the new text only: quoted history may be ours, in the default
    language. Machine mail (auto-replies, lists) says nothing about the person.
    """
    if contact.language is not None or incoming.screening.kind is not MailKind.NORMAL:
        return
    subject = strip_prefixes(tag_pattern(config.support.tag).sub(" ", incoming.parsed.subject))
    found = detect_language(f"{subject}\n{text}", _languages(config.notifications.templates_dir))
    if found is not None:
        contact.language = found


@functools.cache
def _languages(templates_dir: str) -> frozenset[str]:
    """The languages there are templates in, read once like the templates themselves."""
    try:
        return frozenset(Templates(Path(templates_dir) if templates_dir else None).languages())
    except RenderError:  # not installed: each notice is held back and says why; mail goes on
        return frozenset()


def _new_text(incoming: Incoming, decision: Decision) -> str:
    """What the mail adds to the conversation it answers; a first mail keeps all its text.

    A mail answering a closed ticket opens a new one, but what it quotes is the closed
    ticket's history, so it is stripped too. Anything else that opens a ticket keeps what it
    quotes or forwards: that is the request.
    """
    parsed = incoming.parsed
    if decision.action is Action.FOLLOW_UP or decision.closed_ticket is not None:
        return follow_up_text(parsed.text, parsed.html, parsed.subject)
    return parsed.text


def _add_copied(
    session: Session,
    ticket: Ticket,
    people: People,
    decision: Decision,
    actor: str,
    now: datetime,
) -> None:
    """The people the mail was copied to join the ticket, when the decision lets them."""
    if decision.adds_copied:
        for contact in people.copied:
            add_participant(session, ticket, contact, role="cc", actor=actor, now=now)
        return
    newcomers = [c.email for c in people.copied if not is_participant(session, ticket.id, c.email)]
    if newcomers:
        record_event(
            session,
            ticket,
            actor=actor,
            kind="copied_not_added",
            now=now,
            data={"addresses": newcomers, "reason": "matched by its subject tag only"},
        )


def _reopen_if_waiting(
    session: Session, ticket: Ticket, incoming: Incoming, actor: str, now: datetime
) -> None:
    """The customer answered: a ticket waiting on them, or resolved, needs us again."""
    if incoming.screening.kind is MailKind.NORMAL and ticket.status in _REOPENED_BY_CUSTOMER:
        change_status(session, ticket, TicketStatus.OPEN, actor=actor, now=now)
    else:
        touch(session, ticket, now)


def _add_message(
    session: Session,
    ticket: Ticket,
    incoming: Incoming,
    sender: Contact,
    mail: tuple[str, Sequence[str]],
    repetition: Repetition,
    reason: str,
    now: datetime,
) -> int:
    """Add the mail (its text as stored, its attachments' digests) to the ticket's
    conversation; returns the new message's row id."""
    parsed = incoming.parsed
    text, digests = mail
    message = _inbound_message(incoming, sender, text, reason, repetition.body_hash)
    message_row = add_message(session, ticket, message, now)
    store_attachments(session, message_row, parsed.attachments, digests)
    record_event(
        session,
        ticket,
        actor=contact_actor(sender.email),
        kind="message",
        now=now,
        data={
            "message_id": parsed.message_id,
            "message_row": message_row,
            "direction": Direction.IN,
            "reason": reason,
            "inbound_id": incoming.inbound_id,
            "kind": incoming.screening.kind,
            "no_auto_reply": incoming.screening.no_auto_reply,
            "screen_reasons": list(incoming.screening.reasons),
            "spam": incoming.screening.spam,
            **({"loop": repetition.reason} if repetition.reason else {}),
        },
    )
    return message_row


def _inbound_message(
    incoming: Incoming, sender: Contact, text: str, reason: str, body_hash: str | None
) -> NewMessage:
    parsed = incoming.parsed
    return NewMessage(
        message_id=parsed.message_id,
        direction=Direction.IN,
        from_email=sender.email,
        from_name=parsed.from_.name if parsed.from_ else sender.name,
        to=parsed.to,
        cc=parsed.cc,
        subject=parsed.subject,
        date=message_date(incoming),
        text=text,
        kind=incoming.screening.kind,
        thread_reason=reason,
        inbound_id=incoming.inbound_id,
        body_hash=body_hash,
    )
