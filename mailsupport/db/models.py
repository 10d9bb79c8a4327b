"""The database schema as SQLAlchemy 2 typed models.

Times are stored as UTC. Raw mail is kept verbatim in ``inbound`` so that any later step can
be replayed from the bytes that arrived.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for big tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Both keep ids and ticket numbers as signed 64-bit integers. A number outside them is never
# stored, and passed to either database it is an error (an OverflowError from SQLite's driver).
STORABLE_IDS = range(-(2**63), 2**63)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


def table_of(model: type[Base]) -> Table:
    """The model's Core table.

    Statements on its columns skip the ORM's compile and loading steps: selecting two columns
    cost about 40 µs this way and 90 µs through the mapped attributes, and the pipeline runs
    several for every message while it holds SQLite's write lock.
    """
    table = model.__table__
    assert isinstance(table, Table)
    return table


class InboundState(enum.StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    QUARANTINED = "quarantined"


class Disposition(enum.StrEnum):
    """What processing made of a stored message, for ``mailsupport inbox list``."""

    TICKET = "ticket"  # it opened a ticket
    FOLLOW_UP = "follow-up"  # it joined one
    BOUNCE = "bounce"  # a delivery report about mail of ours, recorded on that mail
    DROPPED = "dropped"  # kept out of the tickets: an auto-reply or bounce matching nothing...


class TicketStatus(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    WAITING = "waiting"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"  # every recipient accepted or definitively refused
    FAILED = "failed"  # nobody could be reached before giving up
    CANCELLED = "cancelled"  # superseded before it was sent (notices combined)


class RecipientState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # refused with 5xx, or still failing when we gave up
    BOUNCED = "bounced"  # accepted by the relay, then reported undeliverable by a DSN


class InboundRaw(Base):
    """The bytes of a stored message, kept apart from its row.

    Processing updates the row (state, outcome), and SQLite rewrites a whole record on every
    update: with the bytes in it, each message was written to disk a second time.
    """

    __tablename__ = "inbound_raw"

    inbound_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("inbound.id", ondelete="CASCADE"), primary_key=True
    )
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class Inbound(Base):
    """A raw message exactly as it arrived, durably stored before anyone looked inside."""

    __tablename__ = "inbound"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    message_id: Mapped[str] = mapped_column(String(998), default="")
    channel: Mapped[str] = mapped_column(String(16))  # smtp, lmtp, gateway, import, imap
    envelope_from: Mapped[str | None] = mapped_column(String(998))
    envelope_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    received_at: Mapped[datetime]
    size: Mapped[int] = mapped_column(Integer)
    # Read-only here; written to InboundRaw by whoever stores the message.
    raw: Mapped[bytes] = column_property(
        select(InboundRaw.raw)
        .where(InboundRaw.inbound_id == id)
        .correlate_except(InboundRaw)
        .scalar_subquery(),
        deferred=True,
    )
    state: Mapped[str] = mapped_column(String(16), default=InboundState.PENDING)
    kind: Mapped[str | None] = mapped_column(String(16))  # MailKind once screened
    screen_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    no_auto_reply: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None]
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(Text)  # what processing did, in words
    queue: Mapped[str | None] = mapped_column(String(64))  # set by a channel that decides it (IMAP)
    # Came through our MTA (a trusted relay, the gateway, a trusted IMAP account): only then
    # may its Authentication-Results prove an operator.
    authres_trusted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Once processed: a Disposition, the ticket it went to (or, for a bounce, was about), and
    # its From address, so that what was kept out of the tickets can be listed and found.
    disposition: Mapped[str | None] = mapped_column(String(16))
    ticket_number: Mapped[int | None] = mapped_column(BigInteger)
    from_address: Mapped[str | None] = mapped_column(String(320))
    # Taken in hand by a worker and not finished with: counted before the work starts, so that
    # mail that kills its worker is found out. See db/inhand.py.
    takes: Mapped[int] = mapped_column(Integer, default=0)
    taken_by: Mapped[str | None] = mapped_column(String(255))  # the daemon's instance id
    taken_started: Mapped[datetime | None]  # when that daemon started
    taken_slot: Mapped[int | None] = mapped_column(Integer)  # which of its workers
    taken_until: Mapped[datetime | None]  # other daemons leave it alone until then

    __table_args__ = (
        Index("ix_inbound_state_id", "state", "id"),
        Index("ix_inbound_disposition_id", "disposition", "id"),
    )


class Counter(Base):
    """Named sequences (ticket numbers) incremented under the row's write lock."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Queue(Base):
    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class Contact(Base):
    """Anyone who has written to us or been copied: customers, colleagues, robots."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime]
    hard_bounces: Mapped[int] = mapped_column(Integer, default=0)
    # Set once hard bounces pass the limit: we stop mailing an address that does not exist.
    undeliverable_since: Mapped[datetime | None]


class Operator(Base):
    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class OperatorQueue(Base):
    """An operator's membership of a queue: they get its unassigned tickets' mail."""

    __tablename__ = "operator_queues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"))

    __table_args__ = (UniqueConstraint("operator_id", "queue_id"),)


class OperatorAddress(Base):
    """Another address an operator writes from (a phone, an old mailbox)."""

    __tablename__ = "operator_addresses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320), unique=True)


class TimeEntry(Base):
    """Time an operator spent on a ticket (``#time 30m call``)."""

    __tablename__ = "time_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"))
    minutes: Mapped[int] = mapped_column(Integer)
    work_type: Mapped[str] = mapped_column(String(100), default="")
    at: Mapped[datetime]


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, unique=True)
    subject: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default=TicketStatus.NEW)
    priority: Mapped[str] = mapped_column(String(16), default=Priority.NORMAL)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id"))
    requester_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    first_response_at: Mapped[datetime | None]  # an operator's first reply to the customer

    queue: Mapped[Queue] = relationship(lazy="joined")
    requester: Mapped[Contact] = relationship(lazy="joined")
    assignee: Mapped[Operator | None] = relationship(lazy="joined")

    __table_args__ = (Index("ix_tickets_status", "status"),)


class Participant(Base):
    """A contact taking part in a ticket: its requester or someone copied."""

    __tablename__ = "participants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    role: Mapped[str] = mapped_column(String(16))  # requester, cc
    added_at: Mapped[datetime]

    contact: Mapped[Contact] = relationship(lazy="joined")

    __table_args__ = (UniqueConstraint("ticket_id", "contact_id"),)


class Message(Base):
    """One mail of a ticket's conversation, inbound or outbound."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound.id"))
    message_id: Mapped[str] = mapped_column(String(998), index=True)
    direction: Mapped[str] = mapped_column(String(4))
    internal: Mapped[bool] = mapped_column(Boolean, default=False)
    from_email: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str] = mapped_column(String(200), default="")
    to: Mapped[list[str]] = mapped_column(JSON, default=list)
    cc: Mapped[list[str]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    date: Mapped[datetime]  # the Date header when sane, else when we received it
    created_at: Mapped[datetime]
    text: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16), default="normal")
    thread_reason: Mapped[str] = mapped_column(Text)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))  # proven author
    # The fingerprint of mail that came in (``core.fingerprint``), stored once worked out:
    # the same text from the same sender, again and again, is an auto-responder's.
    body_hash: Mapped[str | None] = mapped_column(String(32))

    attachments: Mapped[list[Attachment]] = relationship(
        lazy="selectin", order_by="Attachment.position"
    )

    __table_args__ = (
        Index("ix_messages_ticket", "ticket_id", "id"),
        Index("ix_messages_sender_created", "from_email", "created_at", "body_hash"),
    )


class Outbox(Base):
    """One outbound mail, written in the transaction of the change that caused it.

    The message is rendered at enqueue time, so its Message-ID and Date never change between
    retries, and a crash between commit and send sends exactly this mail after restart.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(32))  # acknowledgement, status, reply, ...
    automatic: Mapped[bool] = mapped_column(Boolean)  # counts against per-address caps
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    coalesce_key: Mapped[str | None] = mapped_column(String(64))
    # Whose sender holds it while next_attempt_at is its lease: a daemon's instance id and
    # when it started. The same daemon started again takes its rows back at once.
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    claimed_started: Mapped[datetime | None]

    recipients: Mapped[list[OutboxRecipient]] = relationship(
        lazy="selectin", order_by="OutboxRecipient.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_outbox_state_next", "state", "next_attempt_at"),
        Index("ix_outbox_coalesce", "coalesce_key", "state"),
        Index("ix_outbox_ticket_created", "ticket_id", "created_at"),
    )


class OutboxRecipient(Base):
    """One envelope recipient of an outbound mail, with its own delivery state."""

    __tablename__ = "outbox_recipients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(16), default=RecipientState.PENDING)
    code: Mapped[int | None] = mapped_column(Integer)  # last SMTP reply code
    detail: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("outbox_id", "address"),
        Index("ix_outbox_recipients_address", "address"),
    )


class Blob(Base):
    """Attachment content, stored once per distinct content (sha256)."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)


class Attachment(Base):
    """An attachment's metadata; its id, never the sender's filename, names the content."""

    __tablename__ = "attachments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))

    __table_args__ = (Index("ix_attachments_message", "message_id"),)


class Event(Base):
    """Every state change of a ticket: who, when, what changed."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(400))  # "contact:a@b", "operator:a@b", "cli:root"
    kind: Mapped[str] = mapped_column(String(32))  # created, status, assignee, message, ...
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (Index("ix_events_ticket", "ticket_id", "id"),)


class Setting(Base):
    """Small server state kept in the database (schema-independent key/value)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ImapCheckpoint(Base):
    """How far an IMAP account's folder has been taken in, and how its poller fares.

    ``last_uid`` only advances in the transaction that stores the mail up to it, so a message
    at or below it is never stored again under the same ``uidvalidity``. The status columns are
    here so that ``mailsupport imap status`` in another process sees what the daemon sees.
    """

    __tablename__ = "imap_checkpoints"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    folder: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)  # unsigned 32-bit: BIGINT
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    backlog: Mapped[int] = mapped_column(Integer, default=0)  # above last_uid at the last look
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]  # the last time the folder was checked fully
    updated_at: Mapped[datetime]  # any news from the poller: a heartbeat for ``connected``
