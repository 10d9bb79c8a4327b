"""Operator reply step: commands, then an internal note, a reply to relay, or a transcript.

The operator's mail is kept on the ticket as an internal message (with the quoted history
removed); what the customer sees is the relayed copy, sent from the support address. When any
command is unknown or refused, none of the mail's commands is applied and nothing at all goes
to the customer: the operator gets a transcript saying which lines were refused and why, and
can send the corrected reply again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from mailsupport.clock import as_utc
from mailsupport.core.commands import split_commands
from mailsupport.core.fingerprint import attachment_digest
from mailsupport.core.message import Attachment, MailKind
from mailsupport.core.quotes import strip_quoted
from mailsupport.db.models import Direction, Operator, Ticket
from mailsupport.domain.actors import operator_actor
from mailsupport.domain.messages import NOT_COUNTED, NewMessage, add_message
from mailsupport.domain.tickets import record_event, record_first_response, touch
from mailsupport.outbound.staff import StaffMail
from mailsupport.pipeline.attachments import store_attachments
from mailsupport.pipeline.commands import CommandResult, run_commands
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.loops import hold_relay, repetition


@dataclass(frozen=True)
class OperatorMail:
    operator: Operator
    ticket: Ticket
    evidence: str
    to_comment_address: bool


def handle_reply(
    session: Session, incoming: Incoming, mail: OperatorMail, staff: StaffMail, now: datetime
) -> str:
    """Apply an operator's mail to its ticket; returns what was done, in words."""
    parsed = incoming.parsed
    if incoming.screening.kind is not MailKind.NORMAL:
        # An operator's out-of-office answering our notification: kept, never acted on.
        _store(session, incoming, mail, parsed.text, now)
        return f"automatic mail from operator {mail.operator.email} kept internal"
    block = split_commands(parsed.text)
    text = strip_quoted(block.body, parsed.html).strip()
    digests = [attachment_digest(a.content) for a in parsed.attachments]
    repeated = repetition(
        session, staff.config, mail.operator.email, (text, digests), now, ticket_id=mail.ticket.id
    )
    results = run_commands(session, mail.ticket, mail.operator, block.commands, now)
    internal = mail.to_comment_address or (
        bool(block.commands) and block.commands[0].name == "note"
    )
    refused = any(not r.ok for r in results)
    fingerprint = NOT_COUNTED if refused else repeated.body_hash
    message_row = _store(session, incoming, mail, text, now, fingerprint)
    if refused:
        _transcript(session, mail, results, staff, parsed.message_id, now)
        return f"operator {mail.operator.email}: commands refused: none applied, nothing relayed"
    if internal:
        _note(session, mail, message_row, parsed.message_id, now)
        return f"operator {mail.operator.email}: internal note"
    if not text:
        return f"operator {mail.operator.email}: {len(results)} command(s), nothing to relay"
    held = hold_relay(session, staff.config, mail.ticket, repeated.reason, message_row, now)
    if held is not None:
        return f"operator {mail.operator.email}: reply kept, not relayed: {held}"
    return _relay(session, mail, staff, text, parsed.attachments, now)


def _relay(
    session: Session,
    mail: OperatorMail,
    staff: StaffMail,
    text: str,
    attachments: tuple[Attachment, ...],
    now: datetime,
) -> str:
    if not staff.relay(session, mail.ticket, mail.operator, text, attachments, now=now):
        return f"operator {mail.operator.email}: reply kept, no customer address can get it"
    record_first_response(session, mail.ticket, actor=operator_actor(mail.operator.email), now=now)
    return f"operator {mail.operator.email}: reply relayed to the customer"


def _store(
    session: Session,
    incoming: Incoming,
    mail: OperatorMail,
    text: str,
    now: datetime,
    body_hash: str | None = None,
) -> int:
    """Keep the operator's mail on the ticket, internal; returns its row id."""
    parsed = incoming.parsed
    message = NewMessage(
        message_id=parsed.message_id,
        direction=Direction.IN,
        from_email=mail.operator.email,
        from_name=mail.operator.name,
        to=parsed.to,
        cc=parsed.cc,
        subject=parsed.subject,
        date=as_utc(parsed.date) if parsed.date else now,
        text=text,
        kind="operator",
        thread_reason=f"operator {mail.operator.email}, proven by {mail.evidence}",
        internal=True,
        inbound_id=incoming.inbound_id,
        operator_id=mail.operator.id,
        body_hash=body_hash,
    )
    message_row = add_message(session, mail.ticket, message, now)
    store_attachments(session, message_row, parsed.attachments)
    touch(session, mail.ticket, now)
    return message_row


def _note(
    session: Session, mail: OperatorMail, message_row: int, message_id: str, now: datetime
) -> None:
    record_event(
        session,
        mail.ticket,
        actor=operator_actor(mail.operator.email),
        kind="note",
        now=now,
        data={"message_row": message_row, "message_id": message_id},
    )


def _transcript(
    session: Session,
    mail: OperatorMail,
    results: list[CommandResult],
    staff: StaffMail,
    in_reply_to: str,
    now: datetime,
) -> None:
    staff.to_operator(
        session,
        mail.ticket,
        mail.operator,
        "operator_transcript",
        {"results": [{"line": r.line, "ok": r.ok, "detail": r.detail} for r in results]},
        now=now,
        in_reply_to=in_reply_to or None,
    )
