"""Run the pipeline over stored messages: one transaction per message, failures quarantined.

Parsing happens before the write transaction opens, so on SQLite the write lock is held only
for the short database part. The claim inside the transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the immediate write lock on SQLite, and the state check on both) makes sure that
several workers or daemons never process one message twice.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock
from mailsupport.config import Config
from mailsupport.core.message import MailKind, ParsedMessage
from mailsupport.core.parse import parse_message
from mailsupport.db.engine import read_session
from mailsupport.db.inbox import Share, pending_ids
from mailsupport.db.models import Inbound, InboundState, Ticket
from mailsupport.domain.actors import contact_actor
from mailsupport.domain.tickets import record_event
from mailsupport.errors import MessageParseError
from mailsupport.outbound.notify import Notifier
from mailsupport.pipeline.apply import apply
from mailsupport.pipeline.bounce import link_bounce
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.identify import identify
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


@dataclass(frozen=True)
class Outcome:
    inbound_id: int
    state: InboundState
    detail: str
    ticket_number: int | None = None


@dataclass(frozen=True)
class _Loaded:
    raw: bytes
    envelope_from: str | None
    envelope_to: tuple[str, ...]
    received_at: datetime
    queue: str | None


# Just the columns processing needs, in one query: loading the mapped row and then its deferred
# raw bytes took two round trips and about a tenth of the time spent on each message.
_LOAD = select(
    Inbound.raw, Inbound.envelope_from, Inbound.envelope_to, Inbound.received_at, Inbound.queue
).where(Inbound.id == bindparam("inbound_id"), Inbound.state == InboundState.PENDING)


def _load(factory: sessionmaker[Session], inbound_id: int) -> _Loaded | None:
    with read_session(factory) as session:
        found = session.execute(_LOAD, {"inbound_id": inbound_id}).one_or_none()
    if found is None:
        return None
    raw, envelope_from, envelope_to, received_at, queue = found
    return _Loaded(raw, envelope_from, tuple(envelope_to or ()), received_at, queue)


_CLAIM = (
    select(Inbound.id)
    .where(Inbound.id == bindparam("inbound_id"), Inbound.state == InboundState.PENDING)
    .with_for_update(skip_locked=True)
)
_INBOUND: Table = Inbound.__table__  # type: ignore[assignment]
# The SET columns are the parameters given besides inbound_id.
_FINISH = update(_INBOUND).where(_INBOUND.c.id == bindparam("inbound_id"))


def _claim(session: Session, inbound_id: int) -> bool:
    """Whether the message is still pending; on PostgreSQL it is then locked for us."""
    return session.execute(_CLAIM, {"inbound_id": inbound_id}).first() is not None


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
            if not ids:
                break
            for inbound_id in ids:
                if limit is not None and done >= limit:
                    break
                if self.process_one(inbound_id) is not None:
                    done += 1
                after = inbound_id
        return done

    def process_one(self, inbound_id: int) -> Outcome | None:
        """Process one stored message; None when it is gone or someone else took it."""
        loaded = _load(self.factory, inbound_id)
        if loaded is None:
            return None
        try:
            parsed = parse_message(loaded.raw)
        except MessageParseError as exc:
            return self.quarantine(inbound_id, f"unparseable: {exc}")
        try:
            return self._apply(inbound_id, loaded, parsed)
        except OperationalError as exc:
            return self._transient_failure(inbound_id, exc)
        except MessageParseError as exc:
            return self.quarantine(inbound_id, f"unusable: {exc}")
        except Exception as exc:
            log.exception("message %s (inbound %s) failed", parsed.message_id, inbound_id)
            return self.quarantine(inbound_id, _describe(exc))

    def _apply(self, inbound_id: int, loaded: _Loaded, parsed: ParsedMessage) -> Outcome | None:
        now = self.clock.now()
        with self.factory.begin() as session:
            if not _claim(session, inbound_id):
                return None
            screening = screen_message(parsed, loaded.envelope_from, self.config)
            incoming = Incoming(
                inbound_id, loaded.envelope_to, loaded.received_at, parsed, screening, loaded.queue
            )
            ticket, detail = self._route(session, incoming, loaded.raw, now)
            self.notifier.flush(session)
            session.execute(
                _FINISH,
                {
                    "inbound_id": inbound_id,
                    "state": InboundState.PROCESSED,
                    "processed_at": now,
                    "outcome": detail,
                    "quarantine_reason": None,
                    **screening_marks(screening),
                },
            )
        log.info("message <%s> (inbound %s): %s", parsed.message_id, inbound_id, detail)
        number = ticket.number if ticket else None
        return Outcome(inbound_id, InboundState.PROCESSED, detail, number)

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
                inbound_id, f"database error after {attempts} attempts: {exc.orig}"
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
        "message <%s> not trusted as an operator's: %s", incoming.parsed.message_id, claim.evidence
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


def _describe(exc: Exception) -> str:
    """One line naming the failure and where it happened, for the quarantine list."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
