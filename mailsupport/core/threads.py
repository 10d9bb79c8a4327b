"""Where a message belongs: the threading decision, as a pure function of gathered facts.

The order is deliberate: a reference to a message we stored is hard to forge, a subject tag is
trivially guessed, so the tag only counts for someone who already takes part in that ticket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailsupport.core.message import MailKind


class Action(enum.StrEnum):
    FOLLOW_UP = "follow_up"
    NEW_TICKET = "new_ticket"
    NO_TICKET = "no_ticket"


@dataclass(frozen=True)
class TicketRef:
    number: int
    closed: bool


@dataclass(frozen=True)
class ThreadFacts:
    kind: MailKind
    from_own_address: bool  # the mail claims to come from one of our support addresses
    referenced: TicketRef | None  # ticket of a stored message named in In-Reply-To/References
    referenced_message_id: str = ""
    tagged_number: int | None = None  # number in the subject tag, if any
    tagged: TicketRef | None = None  # that ticket, when it exists
    sender_participates: bool = False  # the sender takes part in the tagged ticket


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    ticket_number: int | None = None
    # Whether the people the mail was copied to may join the ticket. Not for a follow-up found
    # by its subject tag alone: From is easily forged and numbers easily guessed, and whoever
    # joins a ticket receives its replies from then on.
    adds_copied: bool = True
    # For a new ticket opened because the one the mail answers is closed: that ticket. Its
    # quoted history is on the closed ticket, not news for the new one.
    closed_ticket: int | None = None


_NEVER_A_TICKET = {
    MailKind.BOUNCE: "delivery status notification: kept for delivery tracking",
    MailKind.FEEDBACK: "abuse/feedback report: kept, never a ticket",
}


def decide(facts: ThreadFacts, *, automatic_opens_tickets: bool = True) -> Decision:
    """Where the mail goes; ``automatic_opens_tickets``: whether automatic mail that answers
    nothing (a notice, not an auto-reply) may open a ticket."""
    if facts.kind in _NEVER_A_TICKET:
        return Decision(Action.NO_TICKET, _NEVER_A_TICKET[facts.kind])
    if facts.from_own_address:
        return Decision(Action.NO_TICKET, "sent from our own address: possible mail loop")
    found = _existing_ticket(facts)
    if found is not None:
        return _continue(facts, *found, automatic_opens_tickets)
    refused = _robot_without_ticket(facts.kind, automatic_opens_tickets)
    if refused:
        return Decision(Action.NO_TICKET, f"{refused} matching no ticket")
    return Decision(Action.NEW_TICKET, _new_reason(facts))


def _robot_without_ticket(kind: MailKind, automatic_opens_tickets: bool) -> str:
    """What the mail is, when it may continue a ticket but never open one; else ""."""
    if kind is MailKind.AUTO_REPLY:
        return "automatic reply"
    if kind is MailKind.AUTOMATIC and not automatic_opens_tickets:
        return "automatic mail"
    return ""


def _continue(
    facts: ThreadFacts, ticket: TicketRef, reason: str, automatic_opens_tickets: bool
) -> Decision:
    """A found ticket is continued, unless it is closed: then a new one (robots get none)."""
    if not ticket.closed:
        by_tag_only = facts.referenced is None
        return Decision(Action.FOLLOW_UP, reason, ticket.number, adds_copied=not by_tag_only)
    refused = _robot_without_ticket(facts.kind, automatic_opens_tickets)
    if refused:
        return Decision(Action.NO_TICKET, f"{refused} about closed ticket #{ticket.number}")
    return Decision(
        Action.NEW_TICKET,
        f"ticket #{ticket.number} is closed; {reason}",
        closed_ticket=ticket.number,
    )


def _existing_ticket(facts: ThreadFacts) -> tuple[TicketRef, str] | None:
    if facts.referenced is not None:
        return facts.referenced, f"references <{facts.referenced_message_id}>"
    if facts.tagged is not None and facts.sender_participates:
        return facts.tagged, f"subject tag #{facts.tagged.number}, sender takes part"
    return None


def _new_reason(facts: ThreadFacts) -> str:
    if facts.tagged_number is None:
        return "new ticket"
    if facts.tagged is None:
        return f"new ticket: subject tag #{facts.tagged_number} names no ticket"
    return f"new ticket: subject tag #{facts.tagged_number} from a sender not on that ticket"
