"""Storing raw mail: one row per distinct mail, in a few statements whatever the batch size."""

from __future__ import annotations

import sqlite3
import time

from sqlalchemy import event, func, select

from mailsupport.app import App, open_app
from mailsupport.clock import FrozenClock
from mailsupport.config import build_config
from mailsupport.db.engine import read_session
from mailsupport.db.inbox import RawMail, store_many
from mailsupport.db.models import Inbound, InboundRaw
from mailsupport.intake.writer import InboxWriter

from _fixtures import config_data
from support import make_mail


def _mail(n: int) -> RawMail:
    return RawMail(make_mail(subject=f"mail {n}", message_id=f"<m{n}@customer.example>"), "smtp")


def test_duplicates_within_a_batch_and_across_batches(app: App) -> None:
    first, second, third = _mail(1), _mail(2), _mail(3)
    again = RawMail(first.raw, "imap")  # the same mail by another channel
    with app.factory.begin() as session:
        stored = store_many(session, [first, second, again], app.clock.now())
    assert [s.duplicate for s in stored] == [False, False, True]
    assert stored[2].inbound_id == stored[0].inbound_id
    with app.factory.begin() as session:
        later = store_many(session, [second, third], app.clock.now())
    assert later[0].duplicate and later[0].inbound_id == stored[1].inbound_id
    assert not later[1].duplicate
    with read_session(app.factory) as session:
        assert session.scalar(select(func.count()).select_from(Inbound)) == 3
        raws = {i: raw for i, raw in session.execute(select(InboundRaw.inbound_id, InboundRaw.raw))}
    assert raws == {
        stored[0].inbound_id: first.raw,
        stored[1].inbound_id: second.raw,
        later[1].inbound_id: third.raw,
    }


def test_an_envelope_sender_with_control_characters_does_not_stop_its_batch(app: App) -> None:
    odd = RawMail(_mail(1).raw, "imap", envelope_from="a\x00b@evil.test\r\n")
    with app.factory.begin() as session:
        stored = store_many(session, [odd, _mail(2)], app.clock.now())
    with read_session(app.factory) as session:
        row = session.get_one(Inbound, stored[0].inbound_id)
        assert row.envelope_from == "ab@evil.test"
        assert session.scalar(select(func.count()).select_from(Inbound)) == 2


def test_nothing_to_store(app: App) -> None:
    with app.factory.begin() as session:
        assert store_many(session, [], app.clock.now()) == []


def test_a_batch_costs_the_same_few_statements_as_one_mail(app: App) -> None:
    # The listener's writer holds the write lock for this; a statement per mail made every
    # sender wait for the others' round trips.
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        statements.append(sql)

    event.listen(app.engine, "before_cursor_execute", seen)
    try:
        with app.factory.begin() as session:
            session.connection()
            statements.clear()
            store_many(session, [_mail(n) for n in range(20)], app.clock.now())
    finally:
        event.remove(app.engine, "before_cursor_execute", seen)
    assert len(statements) == 3  # which are stored, the new rows, their bytes


def test_mail_that_arrives_while_the_writer_waits_for_the_lock_shares_its_commit(
    sqlite_url: str, clock: FrozenClock
) -> None:
    app = open_app(build_config(config_data(sqlite_url), env={}), clock=clock, migrate=True)
    commits: list[None] = []
    event.listen(app.engine, "commit", lambda _conn: commits.append(None))
    writer = InboxWriter(app.factory, app.clock)
    writer.start()
    blocker = sqlite3.connect(app.engine.url.database or "", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        futures = [writer.submit(_mail(0))]
        time.sleep(0.2)  # the writer is now waiting for the lock with one mail
        futures += [writer.submit(_mail(n)) for n in range(1, 5)]
        blocker.execute("COMMIT")
        stored = [future.result(timeout=10) for future in futures]
    finally:
        blocker.close()
        writer.stop()
        app.close()
    assert len({s.inbound_id for s in stored}) == 5
    assert len(commits) == 1


def test_big_mail_is_stored_whole_without_sqlite_binding_a_copy_of_it(app: App) -> None:
    """SQLite copies a bound blob twice; big mail is written through its blob I/O instead."""
    from mailsupport.db.inbox import BLOB_IO_AT_LEAST

    big = [
        RawMail(make_mail(subject=f"big {n}", body="x\r\n" * (BLOB_IO_AT_LEAST // 2)), "smtp")
        for n in range(2)
    ]
    mails = [big[0], _mail(1), big[1]]
    bound: list[int] = []

    def watch(_conn: object, _cursor: object, _sql: str, params: object, *_: object) -> None:
        rows = params if isinstance(params, list) else [params]
        for row in rows:
            values = row.values() if isinstance(row, dict) else row
            bound.extend(len(v) for v in values if isinstance(v, bytes | memoryview))

    event.listen(app.engine, "before_cursor_execute", watch)
    try:
        with app.factory.begin() as session:
            stored = store_many(session, mails, app.clock.now())
    finally:
        event.remove(app.engine, "before_cursor_execute", watch)
    with read_session(app.factory) as session:
        raws = dict(list(session.execute(select(InboundRaw.inbound_id, InboundRaw.raw))))
    assert [raws[s.inbound_id] for s in stored] == [m.raw for m in mails]
    if app.engine.dialect.name == "sqlite":
        assert bound and max(bound) < BLOB_IO_AT_LEAST
