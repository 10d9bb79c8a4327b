"""Who may receive an automatic mail (acknowledgement, notice): the loop breakers.

Screening keeps us from answering machine mail; this keeps us from writing to addresses that
cannot or should not get automatic mail, and caps how much any one address gets, which stops
the loops no header reveals. Mail between a ticket's operators and its customers is capped
per ticket too: two people's auto-responders answering each other through us would otherwise
exchange hundreds of mails a minute, each relayed reply and each notification looking like a
person's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.db.models import Contact, Outbox, OutboxRecipient, OutboxState, Ticket, table_of
from mailsupport.domain.actors import SYSTEM
from mailsupport.domain.contacts import find_contact
from mailsupport.domain.operators import operator_emails
from mailsupport.domain.tickets import record_event

# The outbox kind of an operator's reply relayed to the customers.
RELAYED_KIND = "reply"

# Local parts (with ".", "-" and "_" removed) of addresses that are robots by convention.
_ROBOTS = ("mailerdaemon", "postmaster", "noreply", "donotreply", "dontreply", "bounce")


# Automatic mails to an address in the last hour and the last day, in one query.
_OUTBOX, _RECIPIENTS = table_of(Outbox), table_of(OutboxRecipient)
_RECENT_AUTOMATIC = (
    select(
        func.coalesce(
            func.sum(case((_OUTBOX.c.created_at >= bindparam("hour_ago"), 1), else_=0)), 0
        ),
        func.count(_RECIPIENTS.c.id),
    )
    .join(_OUTBOX, _OUTBOX.c.id == _RECIPIENTS.c.outbox_id)
    .where(
        _RECIPIENTS.c.address == bindparam("address"),
        _OUTBOX.c.automatic.is_(True),
        _OUTBOX.c.created_at >= bindparam("day_ago"),
        _OUTBOX.c.state != OutboxState.CANCELLED,
    )
)


# Replies relayed to a ticket's customers, and mail to one address about one ticket, within a
# window: both found through ``ix_outbox_ticket_created``.
_RELAYED = select(func.count(_OUTBOX.c.id)).where(
    _OUTBOX.c.ticket_id == bindparam("ticket_id"),
    _OUTBOX.c.created_at >= bindparam("since"),
    _OUTBOX.c.kind == RELAYED_KIND,
    _OUTBOX.c.state != OutboxState.CANCELLED,
)
_ABOUT_TICKET_TO = (
    select(func.count(_RECIPIENTS.c.id))
    .join(_OUTBOX, _OUTBOX.c.id == _RECIPIENTS.c.outbox_id)
    .where(
        _OUTBOX.c.ticket_id == bindparam("ticket_id"),
        _OUTBOX.c.created_at >= bindparam("since"),
        _RECIPIENTS.c.address == bindparam("address"),
        _OUTBOX.c.state != OutboxState.CANCELLED,
    )
)


def _automatic_mails_since(
    session: Session, address: str, hour_ago: datetime, day_ago: datetime
) -> tuple[int, int]:
    values = {"address": address, "hour_ago": hour_ago, "day_ago": day_ago}
    hour, day = session.execute(_RECENT_AUTOMATIC, values).one()
    return int(hour), int(day)


def is_robot_address(address: str) -> bool:
    local = address.rpartition("@")[0].lower()
    squashed = local.replace(".", "").replace("-", "").replace("_", "")
    return squashed.startswith(_ROBOTS)


def delivery_refusal(
    session: Session, config: Config, address: str, contact: Contact | None = None
) -> str | None:
    """Why ``address`` must get no mail from us at all, or None.

    ``contact``, when the caller has it loaded, is the contact of ``address``.
    """
    if config.base_address(address) is not None:
        return "it is one of our own addresses"
    if is_robot_address(address):
        return "it is a robot address (mailer-daemon, postmaster, noreply...)"
    if address.lower() in operator_emails(session):
        # Taking part from before it was an operator's: operators get operators' mail only.
        return "it is an operator's address"
    if contact is None:
        contact = find_contact(session, address)
    if contact is not None and contact.undeliverable_since is not None:
        return "mail to it has bounced repeatedly"
    return None


def automatic_mail_refusal(
    session: Session, config: Config, contact: Contact, now: datetime
) -> str | None:
    """Why ``contact`` must not get an automatic mail now, or None when it may."""
    refusal = delivery_refusal(session, config, contact.email, contact)
    if refusal is not None:
        return refusal
    limits = config.limits
    hour, day = _automatic_mails_since(
        session, contact.email, now - timedelta(hours=1), now - timedelta(days=1)
    )
    if hour >= limits.auto_replies_per_hour:
        return f"it already got {limits.auto_replies_per_hour} automatic mails in the last hour"
    if day >= limits.auto_replies_per_day:
        return f"it already got {limits.auto_replies_per_day} automatic mails in the last day"
    return None


def relay_refusal(session: Session, config: Config, ticket_id: int, now: datetime) -> str | None:
    """Why no more operator replies may be relayed to the ticket's customers now, or None."""
    limits = config.limits
    since = now - timedelta(minutes=limits.loop_window)
    relayed = session.execute(_RELAYED, {"ticket_id": ticket_id, "since": since}).scalar_one()
    if relayed >= limits.relays_per_ticket_per_window:
        return (
            f"the ticket already relayed {limits.relays_per_ticket_per_window} replies"
            f" in the last {limits.loop_window} minutes"
        )
    return None


def operator_mail_refusal(
    session: Session, config: Config, ticket_id: int, address: str, now: datetime
) -> str | None:
    """Why an operator at ``address`` must get no more notifications about the ticket now."""
    limits = config.limits
    since = now - timedelta(minutes=limits.loop_window)
    values = {"ticket_id": ticket_id, "since": since, "address": address}
    mailed = session.execute(_ABOUT_TICKET_TO, values).scalar_one()
    if mailed >= limits.notifications_per_ticket_per_window:
        return (
            f"it already got {limits.notifications_per_ticket_per_window} mails about the"
            f" ticket in the last {limits.loop_window} minutes"
        )
    return None


def record_held_back(
    session: Session,
    ticket: Ticket,
    mail: str,
    address: str,
    reason: str,
    now: datetime,
    **data: object,
) -> None:
    """Record on ``ticket`` that ``mail`` (an outbox kind) was not sent to ``address``, and why."""
    record_event(
        session,
        ticket,
        actor=SYSTEM,
        kind="auto_reply_suppressed",
        now=now,
        new=address,
        data={"mail": mail, "reason": reason, **data},
    )
