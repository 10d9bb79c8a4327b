"""What a customer's mail adds to its ticket: a follow-up without the history it quotes."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from mailsupport.app import App
from mailsupport.db.models import TicketStatus
from mailsupport.domain.actors import cli_actor
from mailsupport.domain.tickets import change_status, get_ticket

from support import inbound, ingest, make_mail, run_cli, ticket_json

NEW_TEXT = "It is still jammed after the restart.\n\nCarol"
ACK_FROM = "ACME Support <support@example.com>"


def _quoted(text: str) -> str:
    return "".join(f"> {line}\n" if line else ">\n" for line in text.splitlines())


# How each client quotes the mail it answers (here: our acknowledgement) below the new text.
CLIENTS: dict[str, Callable[[str], str]] = {
    "outlook original message": lambda ack: (
        "-----Original Message-----\nFrom: ACME Support [mailto:support@example.com]\n"
        "Sent: Monday, March 2, 2026 9:00 AM\nTo: Carol Customer <carol@customer.test>\n"
        f"Subject: [ACME #1] Printer on floor 3 is jammed\n\n{ack}"
    ),
    "outlook": lambda ack: (
        f"________________________________\nFrom: {ACK_FROM}\n"
        "Sent: Monday, March 2, 2026 9:00 AM\nTo: Carol Customer <carol@customer.test>\n"
        f"Subject: [ACME #1] Printer on floor 3 is jammed\n\n{ack}"
    ),
    "outlook russian": lambda ack: (
        f"От: {ACK_FROM}\nОтправлено: 2 марта 2026 г. 9:00\nКому: carol@customer.test\n"
        f"Тема: [ACME #1] Printer on floor 3 is jammed\n\n{ack}"
    ),
    "gmail": lambda ack: f"On Mon, Mar 2, 2026 at 9:00 AM {ACK_FROM} wrote:\n\n{_quoted(ack)}",
    "thunderbird": lambda ack: f"On 02.03.2026 09:00, ACME Support wrote:\n{_quoted(ack)}",
    "apple mail": lambda ack: f"> On 2 Mar 2026, at 09:00, {ACK_FROM} wrote:\n>\n{_quoted(ack)}",
    "mail.ru": lambda ack: (
        f"Понедельник, 2 марта 2026, 9:00 +03:00 от {ACK_FROM}:\n\n{_quoted(ack)}"
    ),
    "yandex": lambda ack: (
        f'02.03.2026, 09:00, "ACME Support" <support@example.com>:\n{_quoted(ack)}'
    ),
    "russian thunderbird": lambda ack: f"02.03.2026 09:00, ACME Support пишет:\n{_quoted(ack)}",
    "quote only": _quoted,
}


def _open(app: App) -> str:
    """A customer's first mail; returns the Message-ID of our acknowledgement."""
    ingest(app, make_mail(message_id="<first@customer.test>"))
    [_, ack] = ticket_json(app, 1)["messages"]
    return str(ack["message_id"])


def _ack_text(app: App) -> str:
    return str(ticket_json(app, 1)["messages"][1]["text"])


@pytest.mark.parametrize("client", list(CLIENTS))
def test_follow_up_is_stored_without_the_acknowledgement_it_quotes(app: App, client: str) -> None:
    ack_id = _open(app)
    body = f"{NEW_TEXT}\n\n{CLIENTS[client](_ack_text(app))}"
    reply = make_mail(subject="Re: [ACME #1] Printer on floor 3 is jammed", body=body)
    assert ingest(app, make_mail(body=body, in_reply_to=f"<{ack_id}>")).ticket_number == 1
    assert ingest(app, reply).ticket_number == 1  # found by its subject tag
    for follow_up in inbound(ticket_json(app, 1))[1:]:
        assert follow_up["text"] == NEW_TEXT
        assert "registered it as request" in follow_up["text_full"]
        assert follow_up["text_full"].startswith(NEW_TEXT)


def test_first_mail_keeps_what_it_quotes_and_forwards(app: App) -> None:
    body = (
        "Our printer vendor wrote this, please help.\n\n"
        "On Mon, Mar 2, 2026 at 8:00 AM Vendor <help@vendor.example> wrote:\n"
        "> Replace the drum.\n\n"
        "---------- Forwarded message ---------\nFrom: Dave <dave@customer.test>\n"
        "Date: Mon, 2 Mar 2026 at 07:00\nSubject: Printer\nTo: Carol <carol@customer.test>\n\n"
        "The printer on floor 3 is jammed.\n"
    )
    ingest(app, make_mail(body=body))
    [first] = inbound(ticket_json(app, 1))
    assert first["text"] == body
    assert first["text_full"] == body


def test_follow_up_that_only_quotes_keeps_its_whole_text(app: App) -> None:
    ack_id = _open(app)
    body = CLIENTS["gmail"](_ack_text(app))
    ingest(app, make_mail(body=body, in_reply_to=f"<{ack_id}>"))
    follow_up = inbound(ticket_json(app, 1))[1]
    assert follow_up["text"] == body.strip()


def test_inline_answers_keep_their_questions(app: App) -> None:
    ack_id = _open(app)
    body = "ACME Support wrote:\n> Which model is it?\nAn HP 4000.\n> Which floor?\nThe third.\n"
    ingest(app, make_mail(body=body, in_reply_to=f"<{ack_id}>"))
    assert inbound(ticket_json(app, 1))[1]["text"] == body.strip()


def test_answer_to_a_closed_ticket_opens_a_new_one_without_the_quote(app: App) -> None:
    ack_id = _open(app)
    with app.factory.begin() as session:
        ticket = get_ticket(session, 1)
        change_status(session, ticket, TicketStatus.CLOSED, actor=cli_actor(), now=app.clock.now())
    body = f"{NEW_TEXT}\n\n{CLIENTS['outlook'](_ack_text(app))}"
    outcome = ingest(app, make_mail(body=body, in_reply_to=f"<{ack_id}>"))
    assert outcome.ticket_number == 2
    [opened] = inbound(ticket_json(app, 2))
    assert opened["text"] == NEW_TEXT
    assert opened["thread_reason"].startswith("ticket #1 is closed")


def test_tickets_show_full_gives_the_whole_mail(app: App, config_file: str) -> None:
    ack_id = _open(app)
    body = f"{NEW_TEXT}\n\n{CLIENTS['gmail'](_ack_text(app))}"
    ingest(app, make_mail(body=body, in_reply_to=f"<{ack_id}>"))
    short = run_cli(config_file, "tickets", "show", "1")
    assert short.exit_code == 0, short.output
    assert "wrote:" not in short.stdout
    assert "[shortened: `tickets show 1 --full` shows the whole mail]" in short.stdout
    full = run_cli(config_file, "tickets", "show", "1", "--full")
    assert full.exit_code == 0, full.output
    assert f"{NEW_TEXT}\n\nOn Mon, Mar 2, 2026 at 9:00 AM {ACK_FROM} wrote:" in full.stdout
    assert "shortened" not in full.stdout
    shown = json.loads(run_cli(config_file, "tickets", "show", "1", "--json").stdout)
    follow_up = shown["messages"][2]
    assert (follow_up["text"], follow_up["text_full"]) == (NEW_TEXT, body)
