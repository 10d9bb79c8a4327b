"""Delivering the outbox through the relay, with retries, backoff and a time to give up.

Rows are claimed in a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) that moves
their next attempt a lease into the future, then sent with no transaction open, each mail's
result committed in a transaction of its own. Several daemons therefore never send one row at
once, the database is never locked while we wait on the network, and a crash after the claim
only delays the mail by the lease before another daemon sends it (with its fixed Message-ID, so
a resend is recognisable). A claim names the daemon's instance and start: the same daemon
started again takes its rows back at once (``release_previous_claims``).

A mail's result is committed while the relay reads the next mail's MAIL FROM, so the database
and the relay work at the same time; the next mail's data is only sent once that commit has
returned. At any moment at most one mail has been handed to the relay without its result
committed, so a crash, even a ``kill -9``, resends at most that one mail.

The common case, every recipient accepting the mail, is recorded with two UPDATE statements
run straight on the driver's cursor; anything else (a refusal, a retry, giving up) loads the
row and works it out in full, in a session of its own.

Durability: claims and those common-case results are committed without waiting for the disk
(``PRAGMA synchronous=NORMAL`` on SQLite, ``synchronous_commit = off`` on PostgreSQL) on the
sender's own connection; everything else keeps the default (``FULL``, ``on``). A crash of
the process, even ``kill -9``, loses no committed result. A crash of the operating system or
a power cut may lose the results committed since the log last reached the disk (on SQLite:
the last checkpoint, any commit that waits for the disk, or the kernel writing it back on its
own, within about half a minute; on PostgreSQL, where a crash of the server counts too, under
a second): those mails
are then sent once more, with the same Message-ID. Waiting for the disk after every mail
cost about a fifth of the sending rate in ``bench/outbound.py`` (0.69 instead of 0.88 times a
plain smtplib loop, on SQLite).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import UpdateBase

from mailsupport.clock import Clock, as_utc
from mailsupport.config import Config
from mailsupport.core.verp import bounce_address
from mailsupport.db.instance import Owner
from mailsupport.db.models import Outbox, OutboxRecipient, OutboxState, RecipientState, table_of
from mailsupport.domain.settings import server_secret
from mailsupport.outbound.failures import FailureReport
from mailsupport.outbound.relay import Delivery, Relay, RelayUnavailableError, Reply, helo_name

log = logging.getLogger(__name__)

# Rows claimed at once: enough that claiming costs little per mail. A claim leases its rows for
# as long as sending them may take at worst, but for no more than LEASED_MAILS mails: rows not
# sent by then go back to the queue, so a crashed daemon's rows wait at most that long.
BATCH = 100
LEASED_MAILS = 20


@dataclass(frozen=True)
class Claimed:
    outbox_id: int
    message_id: str
    raw: bytes
    recipients: tuple[str, ...]  # those still pending


def backoff(config: Config, attempts: int) -> timedelta:
    """Delay before attempt ``attempts + 1``: doubling from the initial delay, capped."""
    outbound = config.outbound
    seconds = outbound.retry_initial_seconds * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, outbound.retry_max_seconds))


def lease_seconds(config: Config, rows: int) -> float:
    """How long a claim holds its rows: a few relay round trips per mail, each bounded."""
    return config.relay.timeout * (2 + 2 * min(rows, LEASED_MAILS))


def release_previous_claims(session: Session, owner: Owner, now: datetime) -> int:
    """Make due again now the rows earlier runs of this daemon claimed. Does not commit.

    Those runs are dead (the daemon holds its instance's lock), so nothing is being sent of
    them; the lease is for other daemons, which cannot know that.
    """
    result = session.execute(
        update(_OUTBOX)
        .where(
            _OUTBOX.c.state == _PENDING,
            _OUTBOX.c.claimed_by == owner.instance,
            _OUTBOX.c.claimed_started < owner.started,
        )
        .values(next_attempt_at=now, claimed_by=None, claimed_started=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)


class OutboxSender:
    """Sends whatever is due; call ``send_due`` from the scheduler.

    A daemon's sender has an ``owner``, named on its claims; one without (tests, tools) claims
    anonymously, and only leases free its rows.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        config: Config,
        clock: Clock,
        owner: Owner | None = None,
    ) -> None:
        self.factory = factory
        self.config = config
        self.clock = clock
        self.owner = owner
        self._secret: bytes | None = None
        with factory() as session:
            bind = session.get_bind()
        self.engine: Engine = bind if isinstance(bind, Engine) else bind.engine
        self._statements = _Statements(self.engine.dialect)
        self._failures = FailureReport(config)

    def send_due(self) -> int:
        """Send every due row, reusing one relay connection; returns how many were attempted."""
        relay = Relay(self.config.relay, helo_name(self.config.support.address))
        attempted = 0
        sweep = _Sweep(self, self._statements)
        try:
            while claimed := sweep.claim():
                sent, relay_up = self._send_batch(relay, sweep, claimed)
                attempted += sent
                if not relay_up or len(claimed) < BATCH:
                    break
        finally:
            try:
                sweep.close()
            finally:
                relay.close()
        return attempted

    def _send_batch(self, relay: Relay, sweep: _Sweep, claimed: list[Claimed]) -> tuple[int, bool]:
        lease = lease_seconds(self.config, len(claimed))
        deadline = time.monotonic() + lease - 2 * self.config.relay.timeout
        for position, item in enumerate(claimed):
            if position and time.monotonic() > deadline:
                sweep.release(claimed[position:])
                return position, True
            try:
                # The previous mail's result is committed while the relay reads MAIL FROM.
                delivery = relay.send(
                    self._envelope_from(item), item.recipients, item.raw, sweep.record_kept
                )
            except RelayUnavailableError as exc:
                sweep.record_kept()
                self._relay_down(claimed[position:], str(exc))
                return position, False
            sweep.keep(item, delivery)
        return len(claimed), True

    def _envelope_from(self, item: Claimed) -> str:
        if self._secret is None:
            with self.factory.begin() as session:
                self._secret = server_secret(session, self.config)
        return bounce_address(self.config.support.address, item.outbox_id, self._secret)

    def _relay_down(self, unsent: list[Claimed], reason: str) -> None:
        """The relay is unreachable: everything not yet tried waits for the next sweep."""
        log.warning("relay unavailable, %d message(s) wait: %s", len(unsent), reason)
        first, rest = unsent[0], unsent[1:]
        self.record(first, Delivery({}, retry_all=reason))
        retry_at = self.clock.now() + backoff(self.config, 1)
        with self.factory.begin() as session:
            for item in rest:
                row = session.get(Outbox, item.outbox_id)
                if row is not None and row.state == OutboxState.PENDING:
                    row.next_attempt_at = retry_at
                    row.claimed_by = row.claimed_started = None  # a retry, no longer a lease

    def record(self, item: Claimed, delivery: Delivery) -> None:
        """Record any result: each recipient's reply, retries, giving up, failures reported."""
        now = self.clock.now()
        with self.factory.begin() as session:
            row = session.get(Outbox, item.outbox_id, with_for_update=True)
            if row is None or row.state != OutboxState.PENDING:
                return
            row.attempts += 1
            row.claimed_by = row.claimed_started = None  # next_attempt_at is no longer a lease
            failed = _apply_replies(row, delivery, now)
            self._finish(session, row, failed, delivery, now)

    def _finish(
        self,
        session: Session,
        row: Outbox,
        failed: list[OutboxRecipient],
        delivery: Delivery,
        now: datetime,
    ) -> None:
        pending = [r for r in row.recipients if r.state == RecipientState.PENDING]
        if pending and now >= as_utc(row.expires_at):
            failed += _give_up(pending, row.attempts, now)
            pending = []
        if pending:
            row.next_attempt_at = now + backoff(self.config, row.attempts)
            row.last_error = delivery.retry_all or "; ".join(
                f"{r.address}: {r.code} {r.detail}" for r in pending
            )
        else:
            delivered = any(r.state == RecipientState.SENT for r in row.recipients)
            row.state = OutboxState.SENT if delivered else OutboxState.FAILED
            row.sent_at = now if delivered else None
        if failed:
            self._failures.report(session, row, failed, now)
        log.info(
            "outbox %s <%s>: %s after %d attempt(s)",
            row.id,
            row.message_id,
            row.state if not pending else "retrying",
            row.attempts,
        )


class _Sweep:
    """The database side of one ``send_due``: claims and results, on a connection of its own.

    The connection commits without waiting for the disk (see the module's docstring) and is
    put back as it was found. At most one result is kept unrecorded, the last mail's, and
    ``record_kept`` records it before the relay gets the next mail.
    """

    def __init__(self, sender: OutboxSender, statements: _Statements) -> None:
        self._sender = sender
        self._statements = statements
        self._conn: Connection | None = None
        self._kept: tuple[Claimed, Delivery] | None = None

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._sender.engine.connect()
            _set_durable(self._conn, durable=False)
        return self._conn

    def claim(self) -> list[Claimed]:
        sender = self._sender
        now = sender.clock.now()
        conn = self._connection()
        with conn.begin():
            rows = conn.execute(_DUE, {"now": now, "batch": BATCH}).all()
            if not rows:
                return []
            ids = [row.id for row in rows]
            until = now + timedelta(seconds=lease_seconds(sender.config, len(rows)))
            owner = sender.owner
            conn.execute(
                _LEASE,
                {
                    "ids": ids,
                    "until": until,
                    "by": owner.instance if owner else None,
                    "started": owner.started if owner else None,
                },
            )
            pending: dict[int, list[str]] = defaultdict(list)
            for outbox_id, address in conn.execute(_PENDING_RECIPIENTS, {"ids": ids}):
                pending[outbox_id].append(address)
        return [Claimed(r.id, r.message_id, r.raw, tuple(pending[r.id])) for r in rows]

    def release(self, unsent: Sequence[Claimed]) -> None:
        """Hand back rows this sweep had no time left to send: they are due again."""
        self.record_kept()
        conn = self._connection()
        with conn.begin():
            conn.execute(
                _RELEASE,
                {"ids": [item.outbox_id for item in unsent], "now": self._sender.clock.now()},
            )

    def keep(self, item: Claimed, delivery: Delivery) -> None:
        """Hold a sent mail's result until the next mail is on its way (or the sweep ends)."""
        self.record_kept()
        self._kept = (item, delivery)

    def record_kept(self) -> None:
        kept, self._kept = self._kept, None
        if kept is None:
            return
        item, delivery = kept
        answer = _accepted_by_all(item, delivery)
        if answer is not None and self._record_accepted(item, answer):
            return
        self._sender.record(item, delivery)

    def _record_accepted(self, item: Claimed, answer: Reply) -> bool:
        """The mail reached every recipient: two UPDATEs. False if the row was not as claimed."""
        statements = self._statements
        values = {
            "row": item.outbox_id,
            "now": self._sender.clock.now(),
            "code": answer[0],
            "detail": answer[1],
        }
        conn = self._connection()
        with conn.begin() as transaction:
            cursor = _driver(conn).cursor()
            try:
                attempts = statements.mark_sent.run(cursor, values).fetchone()
                done = statements.mark_recipients_sent.run(cursor, values).fetchall()
            finally:
                cursor.close()
            # Cancelled or retried meanwhile, a recipient added back by ``outbox retry``: undo,
            # and let the full path work it out.
            if attempts is None or sorted(a for (a,) in done) != sorted(item.recipients):
                transaction.rollback()
                return False
        log.info(
            "outbox %s <%s>: sent after %d attempt(s)", item.outbox_id, item.message_id, attempts[0]
        )
        return True

    def close(self) -> None:
        try:
            self.record_kept()
        finally:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                try:
                    _set_durable(conn, durable=True)
                except Exception:
                    conn.invalidate()  # never hand the pool a connection that does not flush
                    raise
                finally:
                    conn.close()


def _driver(conn: Connection) -> Any:
    """The DB-API connection under ``conn``."""
    return conn.connection.dbapi_connection


def _set_durable(conn: Connection, *, durable: bool) -> None:
    """Whether each commit on ``conn`` waits until it is on disk (outside any transaction)."""
    if conn.dialect.name == "sqlite":
        # A pragma that must not run inside a transaction: straight on the driver.
        _driver(conn).execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    elif conn.dialect.name == "postgresql":
        with conn.begin():
            setting = "DEFAULT" if durable else "off"
            conn.exec_driver_sql(f"SET SESSION synchronous_commit = {setting}")


# --- statements -------------------------------------------------------------------------------

_OUTBOX = table_of(Outbox)
_RECIPIENTS = table_of(OutboxRecipient)
_PENDING = OutboxState.PENDING.value

_DUE = (
    select(_OUTBOX.c.id, _OUTBOX.c.message_id, _OUTBOX.c.raw)
    .where(_OUTBOX.c.state == _PENDING, _OUTBOX.c.next_attempt_at <= bindparam("now"))
    .order_by(_OUTBOX.c.next_attempt_at, _OUTBOX.c.id)
    .limit(bindparam("batch"))
    .with_for_update(skip_locked=True)
)
_LEASE = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        next_attempt_at=bindparam("until"),
        claimed_by=bindparam("by"),
        claimed_started=bindparam("started"),
    )
)
_RELEASE = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)), _OUTBOX.c.state == _PENDING)
    .values(next_attempt_at=bindparam("now"), claimed_by=None, claimed_started=None)
)
_PENDING_RECIPIENTS = (
    select(_RECIPIENTS.c.outbox_id, _RECIPIENTS.c.address)
    .where(
        _RECIPIENTS.c.outbox_id.in_(bindparam("ids", expanding=True)),
        _RECIPIENTS.c.state == RecipientState.PENDING.value,
    )
    .order_by(_RECIPIENTS.c.id)
)


class _Compiled:
    """A statement compiled once for a dialect and run on the driver's cursor.

    For statements this small SQLAlchemy's execution layer costs more than SQLite's own work;
    the hot path of the sender skips it. Values still go through the column types' bind
    processors (SQLite stores datetimes as text in SQLAlchemy's format).
    """

    def __init__(self, statement: UpdateBase, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self._compiled = compiled
        self.sql = compiled.string
        self._order: Sequence[str] | None = compiled.positiontup if dialect.positional else None
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor

    def run(self, cursor: Any, values: Mapping[str, Any]) -> Any:
        params = self._compiled.construct_params(dict(values))
        for name, processor in self._processors.items():
            params[name] = processor(params[name])
        if self._order is not None:
            cursor.execute(self.sql, tuple(params[name] for name in self._order))
        else:
            cursor.execute(self.sql, params)
        return cursor


class _Statements:
    """The common-case result, as two UPDATEs compiled for the engine's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.mark_sent = _Compiled(
            update(_OUTBOX)
            .where(_OUTBOX.c.id == bindparam("row"), _OUTBOX.c.state == _PENDING)
            .values(
                state=OutboxState.SENT.value,
                sent_at=bindparam("now"),
                attempts=_OUTBOX.c.attempts + 1,
            )
            .returning(_OUTBOX.c.attempts),
            dialect,
        )
        self.mark_recipients_sent = _Compiled(
            update(_RECIPIENTS)
            .where(
                _RECIPIENTS.c.outbox_id == bindparam("row"),
                _RECIPIENTS.c.state == RecipientState.PENDING.value,
            )
            .values(
                state=RecipientState.SENT.value,
                code=bindparam("code"),
                detail=bindparam("detail"),
                updated_at=bindparam("now"),
            )
            .returning(_RECIPIENTS.c.address),
            dialect,
        )


def _accepted_by_all(item: Claimed, delivery: Delivery) -> Reply | None:
    """The one reply every recipient got, when it is a 2xx: the relay took the mail."""
    answers = {delivery.replies.get(address) for address in item.recipients}
    answer = answers.pop() if len(answers) == 1 and not delivery.retry_all else None
    return answer if answer is not None and 200 <= answer[0] < 300 else None


def _apply_replies(row: Outbox, delivery: Delivery, now: datetime) -> list[OutboxRecipient]:
    """Set each pending recipient's state from the relay's reply; returns the newly failed."""
    failed = []
    for recipient in row.recipients:
        if recipient.state != RecipientState.PENDING:
            continue
        code, detail = delivery.replies.get(recipient.address, (None, delivery.retry_all))
        recipient.code, recipient.detail, recipient.updated_at = code, detail, now
        if code is not None and 200 <= code < 300:
            recipient.state = RecipientState.SENT
        elif code is not None and code >= 500:
            recipient.state = RecipientState.FAILED
            failed.append(recipient)
    return failed


def _give_up(pending: list[OutboxRecipient], attempts: int, now: datetime) -> list[OutboxRecipient]:
    for recipient in pending:
        recipient.state = RecipientState.FAILED
        recipient.detail = (
            f"gave up after {attempts} attempts; last: {recipient.code} {recipient.detail}"
        )
        recipient.updated_at = now
    return pending
