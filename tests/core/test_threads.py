from __future__ import annotations

from mailsupport.core.message import MailKind
from mailsupport.core.threads import Action, Decision, ThreadFacts, TicketRef, decide

OPEN_1 = TicketRef(number=1, closed=False)
CLOSED_1 = TicketRef(number=1, closed=True)


def facts(**kw: object) -> ThreadFacts:
    base: dict[str, object] = {
        "kind": MailKind.NORMAL,
        "from_own_address": False,
        "referenced": None,
    }
    base.update(kw)
    return ThreadFacts(**base)  # type: ignore[arg-type]


def test_reference_wins() -> None:
    d = decide(facts(referenced=OPEN_1, referenced_message_id="a@b"))
    assert (d.action, d.ticket_number) == (Action.FOLLOW_UP, 1)
    assert "references <a@b>" in d.reason


def test_tag_needs_participation() -> None:
    d = decide(facts(tagged_number=1, tagged=OPEN_1, sender_participates=True))
    assert (d.action, d.ticket_number) == (Action.FOLLOW_UP, 1)
    stranger = decide(facts(tagged_number=1, tagged=OPEN_1, sender_participates=False))
    assert stranger.action is Action.NEW_TICKET
    assert "not on that ticket" in stranger.reason


def test_tag_of_missing_ticket_opens_new() -> None:
    d = decide(facts(tagged_number=99))
    assert d.action is Action.NEW_TICKET and "names no ticket" in d.reason


def test_bounces_and_feedback_never_open_tickets() -> None:
    for kind in (MailKind.BOUNCE, MailKind.FEEDBACK):
        assert decide(facts(kind=kind)).action is Action.NO_TICKET
        assert decide(facts(kind=kind, referenced=OPEN_1)).action is Action.NO_TICKET


def test_auto_reply_joins_its_ticket_but_opens_none() -> None:
    assert decide(facts(kind=MailKind.AUTO_REPLY)).action is Action.NO_TICKET
    joined = decide(facts(kind=MailKind.AUTO_REPLY, referenced=OPEN_1))
    assert joined.action is Action.FOLLOW_UP
    assert decide(facts(kind=MailKind.AUTO_REPLY, referenced=CLOSED_1)).action is Action.NO_TICKET


def test_automatic_mail_opens_a_ticket_unless_told_to_drop_it() -> None:
    """A notice such as "incident assigned to your group" is work, unlike an auto-reply."""
    opened = decide(facts(kind=MailKind.AUTOMATIC))
    assert opened.action is Action.NEW_TICKET
    assert decide(facts(kind=MailKind.AUTOMATIC, referenced=CLOSED_1)).action is Action.NEW_TICKET
    dropped = decide(facts(kind=MailKind.AUTOMATIC), automatic_opens_tickets=False)
    assert dropped == Decision(Action.NO_TICKET, "automatic mail matching no ticket")
    closed = decide(
        facts(kind=MailKind.AUTOMATIC, referenced=CLOSED_1), automatic_opens_tickets=False
    )
    assert closed.action is Action.NO_TICKET
    joined = decide(
        facts(kind=MailKind.AUTOMATIC, referenced=OPEN_1), automatic_opens_tickets=False
    )
    assert joined.action is Action.FOLLOW_UP


def test_closed_ticket_gets_a_new_one() -> None:
    d = decide(facts(referenced=CLOSED_1))
    assert d.action is Action.NEW_TICKET and "closed" in d.reason
    assert d.closed_ticket == 1  # the new ticket knows which conversation the mail answers
    by_tag = decide(facts(tagged_number=1, tagged=CLOSED_1, sender_participates=True))
    assert by_tag.closed_ticket == 1
    assert decide(facts()).closed_ticket is None
    assert decide(facts(tagged_number=1, tagged=CLOSED_1)).closed_ticket is None  # a stranger


def test_mail_from_our_own_address_is_not_a_ticket() -> None:
    assert decide(facts(from_own_address=True)).action is Action.NO_TICKET


def test_list_mail_opens_tickets() -> None:
    assert decide(facts(kind=MailKind.LIST)).action is Action.NEW_TICKET


def test_only_a_reference_or_a_new_ticket_lets_copied_people_join() -> None:
    assert decide(facts(referenced=OPEN_1, referenced_message_id="a@b")).adds_copied
    assert decide(facts()).adds_copied  # a new ticket: its Cc are its participants
    by_tag = decide(facts(tagged_number=1, tagged=OPEN_1, sender_participates=True))
    assert by_tag.action is Action.FOLLOW_UP and not by_tag.adds_copied
