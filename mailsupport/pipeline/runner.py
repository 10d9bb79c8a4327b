"""Run the pipeline over stored messages: a backlog in batches, failures quarantined.

Parsing happens before the write transaction opens, so on SQLite the write lock is held only
for the short database part. The claim inside the transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the immediate write lock on SQLite, and the state check on both) makes sure that
several workers or daemons never process one message twice.

A backlog is applied ``BATCH`` messages to a transaction: the commit, the claim and the
bookkeeping around each transaction cost about as much as a small message's own statements.
A batch is all or nothing, so when one of its messages fails the batch is rolled back and its
messages are applied again one to a transaction, where the failing one is quarantined alone.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock
from mailsupport.config import Config
from mailsupport.core.message import MailKind, ParsedMessage
from mailsupport.core.parse import parse_message
from mailsupport.db.engine import read_session
from mailsupport.db.inbox import Share, pending_ids
from mailsupport.db.models import Inbound, InboundRaw, InboundState, Ticket, table_of
from mailsupport.domain.actors import contact_actor
from mailsupport.domain.tickets import record_event
from mailsupport.errors import MessageParseError, first_line
from mailsupport.outbound.notify import Notifier
from mailsupport.pipeline.apply import apply
from mailsupport.pipeline.bounce import link_bounce
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.identify import identify, load_senders
from mailsupport.pipeline.operator import Claim, prove_operator
from mailsupport.pipeline.screen import screen_message, screening_marks
from mailsupport.pipeline.staff_route import route_operator_mail
from mailsupport.pipeline.thread import thread

log = logging.getLogger(__name__)

# A database that keeps failing on one message (locked, connection lost) is retried this many
# times before the message is quarantined, so a transient outage quarantines nothing.
MAX_TRANSIENT_ATTEMPTS = 5
# A worker whose own share is done takes mail another worker has not started on for this long:
# that worker is stuck on a huge message, or gone.
ORPHANED_AFTER = timedelta(seconds=10)
# Messages applied in one transaction. On SQLite the listener waits for the write lock while a
# batch is applied: eight small messages hold it for about 20 ms. With sixteen, acceptance fell
# while the pipeline was busy; with four, the pipeline spent more on each transaction.
BATCH = 8
# A quarantine reason is read in a list; the whole error is in the log.
_MAX_DETAIL = 300
_PACKAGE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Outcome:
    inbound_id: int
    state: InboundState
    detail: str
    ticket_number: int | None = None


@dataclass(frozen=True)
class _Loaded:
    inbound_id: int
    raw: bytes
    envelope_from: str | None
    envelope_to: tuple[str, ...]
    received_at: datetime
    queue: str | None


@dataclass(frozen=True)
class _Ready:
    """A stored message parsed, screened and waiting for its transaction."""

    loaded: _Loaded
    incoming: Incoming

    @property
    def parsed(self) -> ParsedMessage:
        return self.incoming.parsed


# Just the columns processing needs, in one query: loading the mapped row and then its deferred
# raw bytes took two round trips and about a tenth of the time spent on each message.
_INBOUND, _INBOUND_RAW = table_of(Inbound), table_of(InboundRaw)
_LOAD = (
    select(
        _INBOUND.c.id,
        _INBOUND_RAW.c.raw,
        _INBOUND.c.envelope_from,
        _INBOUND.c.envelope_to,
        _INBOUND.c.received_at,
        _INBOUND.c.queue,
    )
    .join(_INBOUND_RAW, _INBOUND_RAW.c.inbound_id == _INBOUND.c.id)
    .where(
        _INBOUND.c.id.in_(bindparam("inbound_ids", expanding=True)),
        _INBOUND.c.state == InboundState.PENDING,
    )
)


def _load(factory: sessionmaker[Session], inbound_ids: Sequence[int]) -> list[_Loaded]:
    """The messages among ``inbound_ids`` still pending, in the order asked for."""
    with read_session(factory) as session:
        rows = session.execute(_LOAD, {"inbound_ids": list(inbound_ids)}).all()
    found = {
        row.id: _Loaded(
            row.id,
            row.raw,
            row.envelope_from,
            tuple(row.envelope_to or ()),
            row.received_at,
            row.queue,
        )
        for row in rows
    }
    return [found[i] for i in inbound_ids if i in found]


_CLAIM = (
    select(_INBOUND.c.id)
    .where(
        _INBOUND.c.id.in_(bindparam("inbound_ids", expanding=True)),
        _INBOUND.c.state == InboundState.PENDING,
    )
    .with_for_update(skip_locked=True)
)
# The SET columns are the parameters given besides inbound_id.
_FINISH = update(_INBOUND).where(_INBOUND.c.id == bindparam("inbound_id"))


def _claim(session: Session, inbound_ids: Sequence[int]) -> set[int]:
    """The messages still pending; on PostgreSQL they are then locked for us."""
    return set(session.execute(_CLAIM, {"inbound_ids": list(inbound_ids)}).scalars())


class Pipeline:
    """Processes stored messages with one configuration and clock."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        config: Config,
        clock: Clock,
        notifier: Notifier | None = None,
    ) -> None:
        self.factory = factory
        self.config = config
        self.clock = clock
        self.notifier = notifier or Notifier(config, clock)
        self.staff = self.notifier.staff

    def process_pending(self, limit: int | None = None, share: Share | None = None) -> int:
        """Process the backlog in arrival order; returns how many messages were handled.

        With a ``share``, this worker's part first, then whatever other workers left behind
        for longer than ``ORPHANED_AFTER``.
        """
        done = self._sweep(limit, share)
        if share is not None and share.of > 1:
            left_behind = Share(stored_before=self.clock.now() - ORPHANED_AFTER)
            done += self._sweep(None if limit is None else limit - done, left_behind)
        return done

    def _sweep(self, limit: int | None, share: Share | None) -> int:
        done = 0
        after = 0
        while limit is None or done < limit:
            with read_session(self.factory) as session:
                ids = pending_ids(session, limit=100, after_id=after, share=share)
            if limit is not None:
                ids = ids[: limit - done]
            if not ids:
                break
            for start in range(0, len(ids), BATCH):
                done += self._process_batch(ids[start : start + BATCH])
            after = ids[-1]
        return done

    def process_one(self, inbound_id: int) -> Outcome | None:
        """Process one stored message; None when it is gone or someone else took it."""
        loaded = _load(self.factory, [inbound_id])
        if not loaded:
            return None
        ready = self._parse(loaded[0])
        if isinstance(ready, Outcome):
            return ready
        return self._apply_guarded(ready)

    def _process_batch(self, inbound_ids: Sequence[int]) -> int:
        """Process these messages, in one transaction when they all succeed; how many were."""
        done = 0
        batch: list[_Ready] = []
        for loaded in _load(self.factory, inbound_ids):
            ready = self._parse(loaded)
            if isinstance(ready, Outcome):
                done += 1
            else:
                batch.append(ready)
        if len(batch) > 1:
            try:
                return done + len(self._apply_batch(batch))
            except Exception as exc:
                log.info(
                    "batch of %s messages rolled back, applying one by one: %r", len(batch), exc
                )
        return done + sum(self._apply_guarded(ready) is not None for ready in batch)

    def _parse(self, loaded: _Loaded) -> _Ready | Outcome:
        """Parse and screen: neither needs the database, so neither holds its write lock."""
        try:
            parsed = parse_message(loaded.raw)
            screening = screen_message(
                parsed, loaded.envelope_from, self.config, loaded.envelope_to
            )
        except MessageParseError as exc:
            return self.quarantine(loaded.inbound_id, f"unparseable: {exc}")
        except Exception as exc:
            log.exception("inbound %s could not be parsed or screened", loaded.inbound_id)
            return self.quarantine(loaded.inbound_id, _describe(exc))
        incoming = Incoming(
            loaded.inbound_id,
            loaded.envelope_to,
            loaded.received_at,
            parsed,
            screening,
            loaded.queue,
        )
        return _Ready(loaded, incoming)

    def _apply_guarded(self, ready: _Ready) -> Outcome | None:
        """Apply one message in its own transaction; a failure quarantines it or retries later."""
        inbound_id = ready.loaded.inbound_id
        try:
            outcomes = self._apply_batch([ready])
        except OperationalError as exc:
            return self._transient_failure(inbound_id, exc)
        except MessageParseError as exc:
            return self.quarantine(inbound_id, f"unusable: {exc}")
        except Exception as exc:
            log.exception("message %s (inbound %s) failed", _named(ready.parsed), inbound_id)
            return self.quarantine(inbound_id, _describe(exc))
        return outcomes[0] if outcomes else None

    def _apply_batch(self, batch: Sequence[_Ready]) -> list[Outcome]:
        """Apply the messages in one transaction; those another worker took are skipped."""
        now = self.clock.now()
        applied: list[tuple[_Ready, Outcome]] = []
        with self.factory.begin() as session:
            claimed = _claim(session, [ready.loaded.inbound_id for ready in batch])
            load_senders(session, [r.parsed for r in batch if r.loaded.inbound_id in claimed])
            finished: list[dict[str, Any]] = []
            for ready in batch:
                if ready.loaded.inbound_id in claimed:
                    outcome, marks = self._apply(session, ready, now)
                    applied.append((ready, outcome))
                    finished.append(marks)
            if finished:
                session.execute(_FINISH, finished)
        for ready, outcome in applied:
            log.info(
                "message %s (inbound %s): %s",
                _named(ready.parsed),
                outcome.inbound_id,
                outcome.detail,
            )
        return [outcome for _, outcome in applied]

    def _apply(
        self, session: Session, ready: _Ready, now: datetime
    ) -> tuple[Outcome, dict[str, Any]]:
        """Route one claimed message; returns its outcome and the stored message's new columns."""
        loaded, incoming = ready.loaded, ready.incoming
        ticket, detail = self._route(session, incoming, loaded.raw, now)
        self.notifier.flush(session)
        marks = {
            "inbound_id": loaded.inbound_id,
            "state": InboundState.PROCESSED,
            "processed_at": now,
            "outcome": detail,
            "quarantine_reason": None,
            **screening_marks(incoming.screening),
        }
        number = ticket.number if ticket else None
        return Outcome(loaded.inbound_id, InboundState.PROCESSED, detail, number), marks

    def _route(
        self, session: Session, incoming: Incoming, raw: bytes, now: datetime
    ) -> tuple[Ticket | None, str]:
        """Decide where the message goes and apply it; returns the ticket and what was done."""
        people = identify(session, incoming.parsed, self.config, now)
        claim = prove_operator(session, incoming, people, self.config)
        if claim is not None and claim.operator is not None:
            routed = route_operator_mail(
                session, incoming, claim, self.config, self.staff, now, raw
            )
            if routed is not None:
                return routed
        decision = thread(session, incoming, people, self.config)
        ticket = apply(
            session,
            incoming=incoming,
            people=people,
            decision=decision,
            config=self.config,
            now=now,
        )
        if claim is not None and claim.operator is None:
            _not_proven(session, incoming, ticket, claim, now)
        if incoming.screening.kind is MailKind.BOUNCE:
            return ticket, link_bounce(session, incoming, raw, self.config, now)
        return ticket, f"ticket #{ticket.number}: {decision.reason}" if ticket else decision.reason

    def _transient_failure(self, inbound_id: int, exc: OperationalError) -> Outcome | None:
        log.warning("inbound %s: database error, will retry: %s", inbound_id, exc.orig)
        with self.factory.begin() as session:
            row = session.get(Inbound, inbound_id)
            if row is None:
                return None
            row.attempts += 1
            attempts = row.attempts
        if attempts >= MAX_TRANSIENT_ATTEMPTS:
            return self.quarantine(
                inbound_id, f"database error after {attempts} attempts: {_first_line(exc.orig)}"
            )
        return None

    def quarantine(self, inbound_id: int, reason: str) -> Outcome:
        """Set a message aside with its reason; the rest of the backlog goes on."""
        with self.factory.begin() as session:
            row = session.get(Inbound, inbound_id)
            if row is not None:
                row.state = InboundState.QUARANTINED
                row.quarantine_reason = reason[:2000]
                row.processed_at = self.clock.now()
        log.warning("inbound %s quarantined: %s", inbound_id, reason)
        return Outcome(inbound_id, InboundState.QUARANTINED, reason)


def _not_proven(
    session: Session, incoming: Incoming, ticket: Ticket | None, claim: Claim, now: datetime
) -> None:
    """Mail from an operator's address without proof: logged, and recorded on its ticket."""
    log.warning(
        "message %s not trusted as an operator's: %s", _named(incoming.parsed), claim.evidence
    )
    if ticket is not None:
        sender = incoming.parsed.from_.email if incoming.parsed.from_ else ""
        record_event(
            session,
            ticket,
            actor=contact_actor(sender),
            kind="operator_unverified",
            now=now,
            new=sender,
            data={"reason": claim.evidence, "message_id": incoming.parsed.message_id},
        )


def _named(parsed: ParsedMessage) -> str:
    return f"<{parsed.message_id}>" if parsed.message_id else "without Message-ID"


def _describe(exc: Exception) -> str:
    """One short line naming the failure and where it happened, for the quarantine list.

    A database error's own text is the SQL statement and its parameters over many lines; the
    driver's first line says what went wrong. The whole of it is in the log.
    """
    kind = type(exc).__name__
    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig
        if type(cause).__name__ != kind:
            kind = f"{kind} ({type(cause).__name__})"
    return f"{kind}: {_first_line(cause)}{_where(exc)}"


def _first_line(error: object) -> str:
    line = first_line(error)
    return line if len(line) <= _MAX_DETAIL else f"{line[:_MAX_DETAIL]}..."


def _where(exc: BaseException) -> str:
    """Our innermost function on the way to the failure: SQLAlchemy's own says nothing."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    ours = [frame for frame in frames if Path(frame.filename).is_relative_to(_PACKAGE)]
    frame = (ours or frames)[-1]
    return f" (at {frame.name}:{frame.lineno})"
