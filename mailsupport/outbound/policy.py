"""Who may receive an automatic mail (acknowledgement, notice): the loop breakers.

Screening keeps us from answering machine mail; this keeps us from writing to addresses that
cannot or should not get automatic mail, and caps how much any one address gets, which stops
the loops no header reveals.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.db.models import Outbox, OutboxRecipient, OutboxState
from mailsupport.domain.contacts import find_contact

# Local parts (with ".", "-" and "_" removed) of addresses that are robots by convention.
_ROBOTS = ("mailerdaemon", "postmaster", "noreply", "donotreply", "dontreply", "bounce")


def _automatic_mails_since(session: Session, address: str, since: datetime) -> int:
    statement = (
        select(func.count(OutboxRecipient.id))
        .join(Outbox, Outbox.id == OutboxRecipient.outbox_id)
        .where(
            OutboxRecipient.address == address,
            Outbox.automatic.is_(True),
            Outbox.created_at >= since,
            Outbox.state != OutboxState.CANCELLED,
        )
    )
    return int(session.execute(statement).scalar_one())


def is_robot_address(address: str) -> bool:
    local = address.rpartition("@")[0].lower()
    squashed = local.replace(".", "").replace("-", "").replace("_", "")
    return squashed.startswith(_ROBOTS)


def delivery_refusal(session: Session, config: Config, address: str) -> str | None:
    """Why ``address`` must get no mail from us at all, or None."""
    if config.base_address(address) is not None:
        return "it is one of our own addresses"
    if is_robot_address(address):
        return "it is a robot address (mailer-daemon, postmaster, noreply...)"
    contact = find_contact(session, address)
    if contact is not None and contact.undeliverable_since is not None:
        return "mail to it has bounced repeatedly"
    return None


def automatic_mail_refusal(
    session: Session, config: Config, address: str, now: datetime
) -> str | None:
    """Why ``address`` must not get an automatic mail now, or None when it may."""
    refusal = delivery_refusal(session, config, address)
    if refusal is not None:
        return refusal
    limits = config.limits
    if (
        _automatic_mails_since(session, address, now - timedelta(hours=1))
        >= limits.auto_replies_per_hour
    ):
        return f"it already got {limits.auto_replies_per_hour} automatic mails in the last hour"
    if (
        _automatic_mails_since(session, address, now - timedelta(days=1))
        >= limits.auto_replies_per_day
    ):
        return f"it already got {limits.auto_replies_per_day} automatic mails in the last day"
    return None
