"""A backlog applied in batches: one transaction for many messages, nothing lost when one fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select

from mailsupport.app import App
from mailsupport.core.message import ParsedMessage, Screening
from mailsupport.db.engine import read_session
from mailsupport.db.inbox import RawMail, store_many
from mailsupport.db.models import (
    Contact,
    Event,
    Inbound,
    InboundState,
    Outbox,
    Ticket,
    TicketStatus,
)
from mailsupport.domain.actors import cli_actor
from mailsupport.domain.operators import add_operator, operator_emails
from mailsupport.domain.tickets import change_status, get_ticket, participants
from mailsupport.pipeline import runner
from mailsupport.pipeline.runner import BATCH, Pipeline
from mailsupport.pipeline.screen import screen_message

from support import ingest, make_mail


def _store(app: App, raws: list[bytes]) -> list[int]:
    with app.factory.begin() as session:
        stored = store_many(session, [RawMail(raw, "smtp") for raw in raws], app.clock.now())
    return [s.inbound_id for s in stored]


@pytest.fixture
def commits(app: App) -> Iterator[list[None]]:
    """One entry per transaction committed on the application's engine."""
    seen: list[None] = []

    def count(_connection: object) -> None:
        seen.append(None)

    event.listen(app.engine, "commit", count)
    yield seen
    event.remove(app.engine, "commit", count)


def test_a_backlog_is_applied_in_few_transactions(app: App, commits: list[None]) -> None:
    count = BATCH * 2
    _store(app, [make_mail(sender=f"c{i}@customer.test") for i in range(count)])
    commits.clear()
    operator_lookups: list[str] = []

    def watch(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "operator_addresses" in statement:
            operator_lookups.append(statement)

    event.listen(app.engine, "before_cursor_execute", watch)
    try:
        assert Pipeline(app.factory, app.config, app.clock).process_pending() == count
    finally:
        event.remove(app.engine, "before_cursor_execute", watch)

    with app.factory() as session:
        assert session.execute(select(func.count(Ticket.id))).scalar_one() == count
    assert len(commits) == 2  # one a batch, not one a message
    # Asked once a batch, not once a message (nor once a flush).
    assert len(operator_lookups) == 2


def test_a_failing_message_rolls_back_its_batch_and_only_it_is_quarantined(app: App) -> None:
    first = make_mail(sender="ann@customer.test", message_id="<first@customer.test>")
    # No From, no Reply-To and no return path: nobody to open a ticket for.
    nobody = make_mail(sender="", subject="Who sent this?")
    reply = make_mail(
        sender="ann@customer.test",
        subject="Re: [ACME #1] Printer on floor 3 is jammed",
        in_reply_to="<first@customer.test>",
    )
    later = make_mail(sender="bob@customer.test", subject="Another problem")
    ids = _store(app, [first, nobody, reply, later])

    assert Pipeline(app.factory, app.config, app.clock).process_pending() == 4

    with app.factory() as session:
        states = {row.id: row.state for row in session.execute(select(Inbound.id, Inbound.state))}
        reason = session.get_one(Inbound, ids[1]).quarantine_reason
        numbers = list(session.execute(select(Ticket.number).order_by(Ticket.number)).scalars())
        created = session.execute(
            select(func.count(Event.id)).where(Event.kind == "created")
        ).scalar_one()
        acks = session.execute(select(func.count(Outbox.id))).scalar_one()
        followed = session.execute(select(Inbound.outcome).where(Inbound.id == ids[2])).scalar_one()
    assert states == {
        ids[0]: InboundState.PROCESSED,
        ids[1]: InboundState.QUARANTINED,
        ids[2]: InboundState.PROCESSED,
        ids[3]: InboundState.PROCESSED,
    }
    assert reason is not None and reason.startswith("unusable: ")
    # The rolled-back batch left no trace: no number skipped, nothing recorded twice.
    assert numbers == [1, 2]
    assert created == 2
    assert acks == 2
    assert followed is not None and followed.startswith("ticket #1")


def test_lookups_remembered_in_a_transaction_follow_changes_and_end_with_it(app: App) -> None:
    with app.factory.begin() as session:
        assert operator_emails(session) == frozenset()
        add_operator(session, "olga@example.com", "Olga", app.clock.now())
        assert operator_emails(session) == {"olga@example.com"}

    with read_session(app.factory) as reader:
        assert operator_emails(reader) == {"olga@example.com"}
        with app.factory.begin() as writer:
            add_operator(writer, "pete@example.com", "Pete", app.clock.now())
        reader.commit()  # its next transaction sees what was committed since
        assert operator_emails(reader) == {"olga@example.com", "pete@example.com"}


def test_events_are_written_at_commit_in_one_statement_and_not_after_a_rollback(
    app: App,
) -> None:
    ingest(app, make_mail())
    inserts: list[int] = []

    def watch(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        if statement.startswith("INSERT INTO events"):
            inserts.append(len(params) if isinstance(params, list) else 1)

    event.listen(app.engine, "before_cursor_execute", watch)
    try:
        with app.factory.begin() as session:
            ticket = get_ticket(session, 1)
            for status in (TicketStatus.OPEN, TicketStatus.WAITING, TicketStatus.RESOLVED):
                change_status(session, ticket, status, actor=cli_actor(), now=app.clock.now())
            assert inserts == []  # nothing written until the commit
        with app.factory() as session:
            ticket = get_ticket(session, 1)
            change_status(
                session, ticket, TicketStatus.CLOSED, actor=cli_actor(), now=app.clock.now()
            )
            session.rollback()
    finally:
        event.remove(app.engine, "before_cursor_execute", watch)

    assert inserts == [3]
    with app.factory() as session:
        statuses = session.execute(
            select(Event.new).where(Event.kind == "status").order_by(Event.id)
        ).scalars()
        assert list(statuses) == ["open", "waiting", "resolved"]


def test_a_reply_by_reference_skips_the_tag_and_participant_lookups(app: App) -> None:
    ingest(app, make_mail(sender="ann@customer.test", message_id="<first@customer.test>"))
    reply = make_mail(
        sender="ann@customer.test",
        subject="Re: [ACME #1] Printer on floor 3 is jammed",
        in_reply_to="<first@customer.test>",
    )
    _store(app, [reply])
    statements: list[str] = []

    def watch(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(app.engine, "before_cursor_execute", watch)
    try:
        assert Pipeline(app.factory, app.config, app.clock).process_pending() == 1
    finally:
        event.remove(app.engine, "before_cursor_execute", watch)
    # The reference decides; the tag would only be asked about without one. The sender, on
    # the ticket already, is added by an insert that does nothing rather than after a check.
    assert not [s for s in statements if s.startswith("SELECT participants.id")]
    tag_lookup = "SELECT tickets.id, tickets.number, tickets.status FROM tickets WHERE"
    assert not [s for s in statements if s.startswith(tag_lookup)]
    with app.factory() as session:
        assert len(participants(session, get_ticket(session, 1))) == 1
        kinds = session.execute(select(Event.kind).order_by(Event.id)).scalars().all()
    assert kinds.count("participant") == 1


def test_a_message_that_cannot_be_screened_is_quarantined_with_the_reason(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _store(app, [make_mail(sender="ann@customer.test"), make_mail(sender="bob@c.test")])

    def screen_failing_for_bob(parsed: ParsedMessage, *args: object) -> Screening:
        if parsed.from_ is not None and parsed.from_.email == "bob@c.test":
            raise RuntimeError("screening rules broke")
        return screen_message(parsed, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "screen_message", screen_failing_for_bob)
    assert Pipeline(app.factory, app.config, app.clock).process_pending() == 2
    with app.factory() as session:
        ann, bob = (session.get_one(Inbound, i) for i in ids)
    assert ann.state == InboundState.PROCESSED
    assert bob.state == InboundState.QUARANTINED
    assert bob.quarantine_reason is not None
    assert bob.quarantine_reason.startswith("RuntimeError: screening rules broke")


_REFUSING_TRIGGER = {
    "sqlite": [
        """CREATE TRIGGER refuse_message BEFORE INSERT ON messages
           WHEN NEW.subject = 'Refused'
           BEGIN SELECT RAISE(ABORT, 'refused by a trigger\nsecond line'); END""",
    ],
    "postgresql": [
        """CREATE FUNCTION refuse_message() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.subject = 'Refused' THEN
               RAISE EXCEPTION E'refused by a trigger\nsecond line' USING DETAIL = 'details';
             END IF;
             RETURN NEW;
           END $$""",
        """CREATE TRIGGER refuse_message BEFORE INSERT ON messages
           FOR EACH ROW EXECUTE FUNCTION refuse_message()""",
    ],
}


def test_a_database_error_is_one_short_line_in_the_quarantine_and_whole_in_the_log(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    with app.engine.begin() as connection:
        for statement in _REFUSING_TRIGGER[app.engine.dialect.name]:
            connection.exec_driver_sql(statement)
    outcome = ingest(app, make_mail(subject="Refused"))
    assert outcome.state is InboundState.QUARANTINED
    with app.factory() as session:
        reason = session.get_one(Inbound, outcome.inbound_id).quarantine_reason
    assert reason is not None
    assert reason.splitlines() == [reason]
    assert reason.split(":")[0] in {"IntegrityError", "ProgrammingError (RaiseException)"}
    assert "refused by a trigger" in reason
    assert "second line" not in reason and "INSERT" not in reason
    assert len(reason) < 150, reason
    assert "INSERT INTO messages" in caplog.text and "second line" in caplog.text


def test_a_batch_looks_up_its_senders_with_one_query(app: App) -> None:
    senders = [f"c{i}@customer.test" for i in range(4)]
    for sender in senders:
        ingest(app, make_mail(sender=sender, subject=f"first from {sender}"))
    new = ["new@customer.test", "new@customer.test"]  # twice in one batch, unknown so far
    _store(app, [make_mail(sender=s, subject=f"again from {s}") for s in [*senders, *new]])
    lookups: list[str] = []

    def watch(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("SELECT") and "FROM contacts" in statement:
            lookups.append(statement)

    event.listen(app.engine, "before_cursor_execute", watch)
    try:
        assert Pipeline(app.factory, app.config, app.clock).process_pending() == 6
    finally:
        event.remove(app.engine, "before_cursor_execute", watch)
    # One for the batch, one when the new sender is first met; none for each message.
    assert len(lookups) == 2
    with app.factory() as session:
        emails = session.execute(select(Contact.email).order_by(Contact.email)).scalars().all()
    assert emails == [*senders, "new@customer.test"]
