"""Delivering the outbox through the relay, with retries, backoff and a time to give up.

Rows are claimed in a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) that moves
their next attempt a lease into the future, then sent with no transaction open, then their
results recorded. Several daemons therefore never send one row at once, the database is never
locked while we wait on the network, and a crash after the claim only delays the mail by the
lease before it is sent (with its fixed Message-ID, so a resend is recognisable).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock, as_utc
from mailsupport.config import Config
from mailsupport.core.verp import bounce_address
from mailsupport.db.models import Outbox, OutboxRecipient, OutboxState, RecipientState, Ticket
from mailsupport.domain.actors import SYSTEM
from mailsupport.domain.settings import server_secret
from mailsupport.domain.tickets import record_event
from mailsupport.outbound.relay import Delivery, Relay, RelayUnavailableError, helo_name

log = logging.getLogger(__name__)

# Rows claimed at once: enough to reuse the connection well, few enough that the lease (which
# must outlast sending them all) stays short.
BATCH = 20


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


class OutboxSender:
    """Sends whatever is due; call ``send_due`` from the scheduler."""

    def __init__(self, factory: sessionmaker[Session], config: Config, clock: Clock) -> None:
        self.factory = factory
        self.config = config
        self.clock = clock
        self._secret: bytes | None = None

    def send_due(self) -> int:
        """Send every due row, reusing one relay connection; returns how many were attempted."""
        relay = Relay(self.config.relay, helo_name(self.config.support.address))
        attempted = 0
        try:
            while claimed := self._claim():
                sent, relay_up = self._send_batch(relay, claimed)
                attempted += sent
                if not relay_up or len(claimed) < BATCH:
                    break
        finally:
            relay.close()
        return attempted

    def _send_batch(self, relay: Relay, claimed: list[Claimed]) -> tuple[int, bool]:
        for position, item in enumerate(claimed):
            try:
                delivery = relay.send(self._envelope_from(item), item.recipients, item.raw)
            except RelayUnavailableError as exc:
                self._relay_down(claimed[position:], str(exc))
                return position, False
            self._record(item, delivery)
        return len(claimed), True

    def _envelope_from(self, item: Claimed) -> str:
        if self._secret is None:
            with self.factory.begin() as session:
                self._secret = server_secret(session, self.config)
        return bounce_address(self.config.support.address, item.outbox_id, self._secret)

    def _claim(self) -> list[Claimed]:
        now = self.clock.now()
        with self.factory.begin() as session:
            rows = (
                session.execute(
                    select(Outbox)
                    .where(Outbox.state == OutboxState.PENDING, Outbox.next_attempt_at <= now)
                    .order_by(Outbox.next_attempt_at, Outbox.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            # Each message may take a few relay round trips, each bounded by the timeout.
            lease = timedelta(seconds=self.config.relay.timeout * (2 + 2 * len(rows)))
            claimed = []
            for row in rows:
                row.next_attempt_at = now + lease
                pending = tuple(
                    r.address for r in row.recipients if r.state == RecipientState.PENDING
                )
                claimed.append(Claimed(row.id, row.message_id, row.raw, pending))
        return claimed

    def _relay_down(self, unsent: list[Claimed], reason: str) -> None:
        """The relay is unreachable: everything not yet tried waits for the next sweep."""
        log.warning("relay unavailable, %d message(s) wait: %s", len(unsent), reason)
        first, rest = unsent[0], unsent[1:]
        self._record(first, Delivery({}, retry_all=reason))
        retry_at = self.clock.now() + backoff(self.config, 1)
        with self.factory.begin() as session:
            for item in rest:
                row = session.get(Outbox, item.outbox_id)
                if row is not None and row.state == OutboxState.PENDING:
                    row.next_attempt_at = retry_at

    def _record(self, item: Claimed, delivery: Delivery) -> None:
        now = self.clock.now()
        with self.factory.begin() as session:
            row = session.get(Outbox, item.outbox_id, with_for_update=True)
            if row is None or row.state != OutboxState.PENDING:
                return
            row.attempts += 1
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
            self._report_failures(session, row, failed, now)
        log.info(
            "outbox %s <%s>: %s after %d attempt(s)",
            row.id,
            row.message_id,
            row.state if not pending else "retrying",
            row.attempts,
        )

    def _report_failures(
        self, session: Session, row: Outbox, failed: list[OutboxRecipient], now: datetime
    ) -> None:
        ticket = session.get(Ticket, row.ticket_id) if row.ticket_id else None
        for recipient in failed:
            log.warning(
                "outbox %s: delivery to %s failed: %s %s",
                row.id,
                recipient.address,
                recipient.code,
                recipient.detail,
            )
            if ticket is not None:
                record_event(
                    session,
                    ticket,
                    actor=SYSTEM,
                    kind="delivery_failed",
                    now=now,
                    new=recipient.address,
                    data={
                        "outbox_id": row.id,
                        "message_id": row.message_id,
                        "code": recipient.code,
                        "detail": recipient.detail,
                        "queue": ticket.queue.name,
                    },
                )


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
