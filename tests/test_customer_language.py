"""A customer's language, learnt from their mail, chooses the language of what we send them."""

from __future__ import annotations

from sqlalchemy import select

from mailsupport.app import App
from mailsupport.db.models import Contact
from mailsupport.domain.actors import cli_actor
from mailsupport.domain.tickets import change_status, get_ticket, parse_status
from mailsupport.outbound.notify import Notifier

from support import ingest, make_mail, ticket_json

RUSSIAN = "Здравствуйте! Принтер на третьем этаже снова не печатает.\n\nИван"
UKRAINIAN = "Доброго дня! Принтер на третьому поверсі знову не друкує, і сканер теж."


def _language(app: App, email: str = "carol@customer.test") -> str | None:
    with app.factory() as session:
        contact = session.execute(select(Contact).where(Contact.email == email)).scalar_one()
        return contact.language


def _ours(app: App, number: int) -> list[str]:
    return [str(m["text"]) for m in ticket_json(app, number)["messages"] if m["direction"] == "out"]


def _set_status(app: App, number: int, status: str) -> None:
    with app.factory.begin() as session:
        ticket = get_ticket(session, number)
        change_status(session, ticket, parse_status(status), actor=cli_actor(), now=app.clock.now())
        Notifier(app.config, app.clock).flush(session)


def test_a_customer_writing_russian_gets_russian_mail(app: App) -> None:
    ingest(app, make_mail(subject="Принтер не печатает", body=RUSSIAN))
    assert _language(app) == "ru"
    [ack] = _ours(app, 1)
    assert ack.startswith("Здравствуйте") and "зарегистрировали заявку" in ack
    _set_status(app, 1, "resolved")
    assert _ours(app, 1)[-1].startswith("Здравствуйте")
    # Later mail in English changes nothing: the language is learnt once.
    ingest(app, make_mail(subject="New printer", body="Now the other printer is broken too."))
    assert _language(app) == "ru"
    assert _ours(app, 2)[0].startswith("Здравствуйте")


def test_english_and_unknown_languages_keep_the_default(app: App) -> None:
    ingest(app, make_mail(body="The printer is jammed again."))
    ingest(app, make_mail(sender="olena@customer.test", subject="Принтер", body=UKRAINIAN))
    assert _language(app) is None
    assert _language(app, "olena@customer.test") is None
    assert _ours(app, 1)[0].startswith("Hello")
    assert _ours(app, 2)[0].startswith("Hello")


def test_the_first_mail_that_shows_the_language_sets_it(app: App) -> None:
    ingest(app, make_mail(message_id="<first@customer.test>", body="Printer jammed."))
    assert _language(app) is None
    reply = make_mail(subject="Re: [ACME #1] Printer", body="Он всё ещё не работает.")
    ingest(app, reply)
    assert _language(app) == "ru"


def test_a_language_already_known_is_kept(app: App) -> None:
    ingest(app, make_mail(body="Printer jammed."))
    with app.factory.begin() as session:
        contact = session.execute(select(Contact)).scalar_one()
        contact.language = "en"
    ingest(app, make_mail(subject="Сканер", body=RUSSIAN))
    assert _language(app) == "en"
    assert _ours(app, 2)[0].startswith("Hello")


def test_an_auto_reply_says_nothing_about_the_language(app: App) -> None:
    ingest(app, make_mail(message_id="<first@customer.test>", body="Printer jammed."))
    vacation = make_mail(
        subject="Автоответ: Re: [ACME #1] Printer",
        body="Я в отпуске до понедельника.",
        in_reply_to="<first@customer.test>",
        headers={"Auto-Submitted": "auto-replied"},
    )
    ingest(app, vacation)
    assert _language(app) is None
