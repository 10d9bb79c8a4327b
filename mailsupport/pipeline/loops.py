"""Loop step: know an auto-responder by its repetition, whatever its headers say.

A naive responder sends no Auto-Submitted header and answers every mail with the same text.
Two of them, one at an operator's address and one at a customer's, would feed each other
through us for ever: our notification, the operator's responder, the reply we relay, the
customer's responder, the next notification. So would a customer's responder that changes
the subject, opening a ticket (and getting an acknowledgement) each time. A mail whose new
text its sender already sent within ``[limits] loop_window`` is therefore taken for a
responder's: a customer's is kept on its ticket as an automatic reply, acknowledged and
notified no more; an operator's is kept and not relayed.

A customer's mail is compared with what they sent to any ticket (the subject-changing
responder writes a new one each time); an operator's only with what they sent to the same
ticket, since operators rightly send one canned answer to many customers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.fingerprint import cheap_to_fingerprint, fingerprint
from mailsupport.core.message import MailKind, Screening
from mailsupport.db.models import Ticket
from mailsupport.domain.messages import recent_fingerprints
from mailsupport.outbound.policy import record_held_back, relay_refusal
from mailsupport.pipeline.context import Incoming

# Mail that could still be answered or told about; the rest is known machine mail already.
_PERSON_KINDS = frozenset({MailKind.NORMAL, MailKind.LIST})


@dataclass(frozen=True)
class Repetition:
    """What the loop step found about one mail that came in."""

    body_hash: str | None = None  # its fingerprint, when it had to be worked out
    reason: str | None = None  # why it is taken for a responder's; None: it is not


def repetition(
    session: Session,
    config: Config,
    sender: str,
    mail: tuple[str, Sequence[str]],
    now: datetime,
    *,
    ticket_id: int | None = None,
) -> Repetition:
    """Whether ``mail`` (its text as stored, its attachments' digests) repeats what
    ``sender`` sent.

    Only a sender who sent something else within the window can repeat themselves. For
    everyone else the fingerprint is kept only where it costs next to nothing; otherwise it
    is worked out from the stored message if the sender writes again.
    """
    limits = config.limits
    since = now - timedelta(minutes=limits.loop_window)
    earlier = recent_fingerprints(session, sender, since, ticket_id=ticket_id)
    text, digests = mail
    if not earlier:
        return Repetition(fingerprint(text, digests) if cheap_to_fingerprint(text) else None)
    body_hash = fingerprint(text, digests)
    times = earlier.count(body_hash)
    if times < limits.repeats_before_suppress:
        return Repetition(body_hash)
    told = "once" if times == 1 else f"{times} times"
    where = "" if ticket_id is None else " on this ticket"
    reason = (
        f"taken for an auto-responder: {sender} sent the same text{where} {told} before"
        f" in the last {limits.loop_window} minutes"
    )
    return Repetition(body_hash, reason)


def check_customer_mail(
    session: Session,
    incoming: Incoming,
    sender: str,
    mail: tuple[str, Sequence[str]],
    config: Config,
    now: datetime,
) -> tuple[Incoming, Repetition]:
    """The mail, marked as an automatic reply when it repeats itself, and what was found.

    ``mail`` is the text as it will be stored on the ticket and the attachments' digests.
    """
    screening = incoming.screening
    if screening.kind not in _PERSON_KINDS:
        return incoming, Repetition()
    found = repetition(session, config, sender, mail, now)
    if found.reason is None:
        return incoming, found
    reasons = (*screening.reasons, found.reason)
    automatic = Screening(MailKind.AUTO_REPLY, reasons, no_auto_reply=True)
    return replace(incoming, screening=automatic), found


def hold_relay(
    session: Session,
    config: Config,
    ticket: Ticket,
    repeated: str | None,
    message_row: int,
    now: datetime,
) -> str | None:
    """Why an operator's reply must not reach the customer now (recorded), or None."""
    reason = repeated or relay_refusal(session, config, ticket.id, now)
    if reason is not None:
        record_held_back(
            session, ticket, "reply", ticket.requester.email, reason, now, message_row=message_row
        )
    return reason
