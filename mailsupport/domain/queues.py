"""Queues: those the configuration names exist from the start.

A queue came into being with the first mail routed to it, so until then ``#queue sales``
answered "No such queue" although ``[queues]`` routes sales@ to it, and operators could not
be put in it without creating it by hand. The configured ones are now made when the daemon
starts and when a command opens the database; anything else is created only when asked for,
so that a typo is refused instead of becoming a queue nobody's mail goes to.
"""

from __future__ import annotations

import re

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.db.models import Queue
from mailsupport.db.upsert import insert_ignoring_conflict
from mailsupport.domain.tickets import find_queue, get_or_create_queue
from mailsupport.errors import InvalidValueError, NotFoundError

# As the configuration accepts them (config.py).
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_NAMED = select(Queue.name).where(Queue.name.in_(bindparam("names", expanding=True)))


def configured_queues(config: Config) -> tuple[str, ...]:
    """The default queue, those ``[queues]`` routes to and those of ``[[imap]]`` accounts."""
    names = [config.support.default_queue, *config.queues.values()]
    names += [account.queue for account in config.imap if account.queue]
    return tuple(sorted(set(names)))


def missing_queues(session: Session, config: Config) -> list[str]:
    """The configured queues that do not exist yet: one read."""
    names = list(configured_queues(config))
    found = set(session.execute(_NAMED, {"names": names}).scalars())
    return [name for name in names if name not in found]


def create_configured_queues(session: Session, config: Config) -> None:
    """Create the configured queues missing; when none is, this only reads.

    One made meanwhile by another process is left as it is.
    """
    for name in missing_queues(session, config):
        session.execute(insert_ignoring_conflict(session, Queue, {"name": name}, ["name"]))


def queue_names(session: Session) -> list[str]:
    return list(session.execute(select(Queue.name).order_by(Queue.name)).scalars())


def existing_queue(session: Session, name: str, *, create: bool = False) -> Queue:
    """The queue called ``name``; one that does not exist is refused unless ``create``."""
    name = name.strip().lower()
    if create:
        if not _NAME.match(name):
            raise InvalidValueError(
                f"Not a queue name: {name!r} (lower-case letters, digits, '.', '_' and '-')"
            )
        return get_or_create_queue(session, name)
    try:
        return find_queue(session, name)
    except NotFoundError:
        known = ", ".join(queue_names(session)) or "none"
        raise NotFoundError(
            f"No such queue: {name} (queues: {known}); --create makes a new one"
        ) from None
