"""Run the pipeline over stored messages: a backlog in batches, failures quarantined.

Parsing happens before the write transaction opens, so on SQLite the write lock is held only
for the short database part. The claim inside the transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the immediate write lock on SQLite, and the state check on both) makes sure that
several workers or daemons never process one message twice.

A backlog is applied ``BATCH`` messages to a transaction: the commit, the claim and the
bookkeeping around each transaction cost about as much as a small message's own statements.
A batch is all or nothing, so when one of its messages fails the batch is rolled back and its
messages are applied again one to a transaction, where the failing one is quarantined alone.

A worker takes a batch in hand (db/inhand.py) before it parses any of it, so a message that
kills its worker is counted even though nothing else of that worker's work survives. Such a
message is tried again alone, after a batch of others as much as after a batch of one: so only
the culprit is quarantined once workers died with it ``deaths_before_quarantine`` times.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
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
from mailsupport.core.threads import Action
from mailsupport.db.engine import read_session
from mailsupport.db.inbox import Share, pending_ids
from mailsupport.db.inhand import Holder, earlier_takes, release, take
from mailsupport.db.models import (
    Disposition,
    Inbound,
    InboundRaw,
    InboundState,
    Ticket,
    table_of,
)
from mailsupport.domain.queues import create_configured_queues
from mailsupport.domain.tickets import new_events
from mailsupport.errors import HeldMessageError, MessageParseError, first_line
from mailsupport.outbound.failures import FailureReport
from mailsupport.outbound.notify import Notifier
from mailsupport.pipeline.apply import apply
from mailsupport.pipeline.bounce import link_bounce
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.identify import FROM, identify, load_senders
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
    disposition: Disposition | None = None  # once processed


@dataclass(frozen=True)
class _Routed:
    """Where a message went: its ticket (if it is on one), what was done, and the ticket a
    bounce was about."""

    ticket: Ticket | None
    detail: str
    disposition: Disposition
    about_ticket: int | None = None
    # Who it is from when that is not its From header's mailbox (the envelope sender, ...).
    sender: str | None = None


@dataclass(frozen=True)
class _Loaded:
    inbound_id: int
    raw: bytes
    envelope_from: str | None
    envelope_to: tuple[str, ...]
    received_at: datetime
    queue: str | None
    authres_trusted: bool


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
        _INBOUND.c.authres_trusted,
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
            bool(row.authres_trusted),
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


def _batches(inbound_ids: Sequence[int], takes: dict[int, int]) -> Iterator[list[int]]:
    """``BATCH`` messages at a time, in order; one a worker died with goes alone."""
    batch: list[int] = []
    for inbound_id in inbound_ids:
        if takes.get(inbound_id):
            if batch:
                yield batch
                batch = []
            yield [inbound_id]
            continue
        batch.append(inbound_id)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _unwatched(_busy: bool) -> None:
    pass


class Pipeline:
    """Processes stored messages with one configuration and clock.

    A worker's pipeline has a ``holder`` (its place in the pool), under which it takes mail in
    hand before processing it, and an ``in_hand`` callback told when it starts on a message
    (True) and when it has none (False), for its supervisor's time limit. Without a holder (the
    CLI) mail is processed without being taken.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        config: Config,
        clock: Clock,
        notifier: Notifier | None = None,
        *,
        holder: Holder | None = None,
        in_hand: Callable[[bool], None] = _unwatched,
    ) -> None:
        self.factory = factory
        self.config = config
        self.clock = clock
        self.notifier = notifier or Notifier(config, clock)
        self.staff = self.notifier.staff
        self.failures = FailureReport(config, self.staff)
        # Whether the configured queues are known to exist: a ``#queue`` command may name one
        # no mail was routed to yet.
        self._queues_ready = False
        self.holder = holder
        self._in_hand = in_hand
        self._unreleased: set[int] = set()  # taken, not finished, not yet put back

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
                takes = earlier_takes(session, ids) if ids and self.holder else {}
            if limit is not None:
                ids = ids[: limit - done]
            if not ids:
                break
            for batch in _batches(ids, takes):
                done += self._process_batch(batch)
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
        """Process these messages (taken in hand first, for a worker); how many were."""
        if self.holder is None:
            return len(self._work(inbound_ids))
        self.release_unfinished()  # nothing is taken while something could not be put back
        taken = self._take(inbound_ids)
        outcomes = self._quarantine_culprits(taken)
        culprits = {outcome.inbound_id for outcome in outcomes}
        ids = [i for i in inbound_ids if i in taken and i not in culprits]
        finished: set[int] = set()
        try:
            worked = self._work(ids)
            finished = {outcome.inbound_id for outcome in worked}
            outcomes += worked
        finally:
            self._in_hand(False)
            self._unreleased.update(i for i in ids if i not in finished)
        self.release_unfinished()
        return len(outcomes)

    def _take(self, inbound_ids: Sequence[int]) -> dict[int, int]:
        """Take the messages in hand, committed before any work on them starts."""
        assert self.holder is not None
        # Enough for each of them to take as long as it may, and the batch's transaction too.
        seconds = self.config.pipeline.message_timeout * (len(inbound_ids) + 1)
        with self.factory.begin() as session:
            taken = take(
                session, inbound_ids, self.holder, self.clock.now(), timedelta(seconds=seconds)
            )
        for inbound_id, deaths in taken.items():
            if deaths:
                log.warning(
                    "inbound %s: a worker died with it in hand %d time(s); trying it alone",
                    inbound_id,
                    deaths,
                )
        return taken

    def _quarantine_culprits(self, taken: dict[int, int]) -> list[Outcome]:
        limit = self.config.pipeline.deaths_before_quarantine
        return [
            self.quarantine(inbound_id, f"worker died while processing ({deaths} times)")
            for inbound_id, deaths in taken.items()
            if deaths >= limit
        ]

    def release_unfinished(self) -> None:
        """Put back what this worker took and did not finish; raises while the database fails."""
        if self.holder is None or not self._unreleased:
            return
        with self.factory.begin() as session:
            release(session, sorted(self._unreleased), self.holder)
        self._unreleased.clear()

    def _work(self, inbound_ids: Sequence[int]) -> list[Outcome]:
        """Process these messages, in one transaction when they all succeed."""
        outcomes: list[Outcome] = []
        if not inbound_ids:  # all of them taken by other workers
            return outcomes
        batch: list[_Ready] = []
        for loaded in _load(self.factory, inbound_ids):
            self._in_hand(True)
            ready = self._parse(loaded)
            if isinstance(ready, Outcome):
                outcomes.append(ready)
            else:
                batch.append(ready)
        if len(batch) > 1:
            self._in_hand(True)
            try:
                return outcomes + self._apply_batch(batch)
            except Exception as exc:
                log.info(
                    "batch of %s messages rolled back, applying one by one: %r", len(batch), exc
                )
        for ready in batch:
            self._in_hand(True)
            outcome = self._apply_guarded(ready)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

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
            loaded.envelope_from,
            loaded.authres_trusted,
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
            return self.quarantine(inbound_id, f"unusable: {exc}", _sender(ready.parsed))
        except HeldMessageError as exc:
            return self.quarantine(inbound_id, f"held for review: {exc}", _sender(ready.parsed))
        except Exception as exc:
            log.exception("message %s (inbound %s) failed", _named(ready.parsed), inbound_id)
            return self.quarantine(inbound_id, _describe(exc), _sender(ready.parsed))
        return outcomes[0] if outcomes else None

    def _apply_batch(self, batch: Sequence[_Ready]) -> list[Outcome]:
        """Apply the messages in one transaction; those another worker took are skipped."""
        now = self.clock.now()
        applied: list[tuple[_Ready, Outcome]] = []
        with self.factory.begin() as session:
            if not self._queues_ready:
                create_configured_queues(session, self.config)
            claimed = _claim(session, [ready.loaded.inbound_id for ready in batch])
            load_senders(
                session,
                [r.incoming for r in batch if r.loaded.inbound_id in claimed],
                self.config,
            )
            finished: list[dict[str, Any]] = []
            for ready in batch:
                if ready.loaded.inbound_id in claimed:
                    outcome, marks = self._apply(session, ready, now)
                    applied.append((ready, outcome))
                    finished.append(marks)
            if finished:
                session.execute(_FINISH, finished)
        self._queues_ready = True
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
        routed = self._route(session, incoming, loaded.raw, now)
        self.notifier.flush(session)
        number = routed.ticket.number if routed.ticket else None
        marks = {
            "inbound_id": loaded.inbound_id,
            "state": InboundState.PROCESSED,
            "processed_at": now,
            "outcome": routed.detail,
            "quarantine_reason": None,
            "disposition": routed.disposition,
            "ticket_number": number or routed.about_ticket,
            "from_address": routed.sender or _sender(incoming.parsed),
            **screening_marks(incoming.screening),
        }
        outcome = Outcome(
            loaded.inbound_id, InboundState.PROCESSED, routed.detail, number, routed.disposition
        )
        return outcome, marks

    def _route(self, session: Session, incoming: Incoming, raw: bytes, now: datetime) -> _Routed:
        """Decide where the message goes and apply it."""
        people = identify(session, incoming, self.config, now)
        claim = prove_operator(session, incoming, people, self.config, now)
        if claim is not None:
            by_operator = route_operator_mail(
                session, incoming, claim, people, self.config, self.staff, now, raw
            )
            if by_operator is not None:
                return _on_ticket(session, *by_operator)
        decision = thread(session, incoming, people, self.config)
        if claim is not None and decision.action is not Action.NO_TICKET:
            raise HeldMessageError(_claim_without_ticket(claim))
        ticket = apply(
            session,
            incoming=incoming,
            people=people,
            decision=decision,
            config=self.config,
            now=now,
        )
        if incoming.screening.kind is MailKind.BOUNCE:
            linked = link_bounce(session, incoming, raw, self.config, self.failures, now)
            disposition = Disposition.BOUNCE if linked.linked else Disposition.DROPPED
            return _Routed(None, linked.detail, disposition, linked.ticket_number)
        detail = f"ticket #{ticket.number}: {decision.reason}" if ticket else decision.reason
        if people.sender is None or people.sender_source == FROM:
            return _on_ticket(session, ticket, detail)
        detail += f" (sender from the {people.sender_source}: {people.sender.email})"
        return replace(_on_ticket(session, ticket, detail), sender=people.sender.email)

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

    def quarantine(self, inbound_id: int, reason: str, sender: str | None = None) -> Outcome:
        """Set a message aside with its reason (and From, when it was read); the rest of the
        backlog goes on."""
        with self.factory.begin() as session:
            row = session.get(Inbound, inbound_id)
            if row is not None:
                row.state = InboundState.QUARANTINED
                row.quarantine_reason = reason[:2000]
                row.processed_at = self.clock.now()
                row.from_address = sender or row.from_address
        log.warning("inbound %s quarantined: %s", inbound_id, reason)
        return Outcome(inbound_id, InboundState.QUARANTINED, reason)


def _on_ticket(session: Session, ticket: Ticket | None, detail: str) -> _Routed:
    """A message applied to tickets: it opened one, joined one, or was kept out of them."""
    if ticket is None:
        return _Routed(None, detail, Disposition.DROPPED)
    opened = any(e.kind == "created" and e.ticket_id == ticket.id for e in new_events(session))
    return _Routed(ticket, detail, Disposition.TICKET if opened else Disposition.FOLLOW_UP)


def _sender(parsed: ParsedMessage) -> str | None:
    return parsed.from_.email[:320] if parsed.from_ else None


def _claim_without_ticket(claim: Claim) -> str:
    """Why mail claiming an operator that names no ticket opens none."""
    if claim.operator is not None:
        return (
            f"mail from operator {claim.operator.email} names no ticket and forwards no "
            "customer's mail; an operator is never a ticket's customer"
        )
    return f"names no ticket, and is not trusted as an operator's: {claim.evidence}"


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
