"""Server state kept in the database: the signing keys when the config names none.

Bounce addresses and reply addresses have keys of their own, so that the reply key can be
replaced (``operators rotate-secret``, when a reply address leaked) without bounces of mail
still in flight losing their way back to it. A database that had only the one key has it as
both, so the reply addresses already sent keep working (migration 0008).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.db.models import Setting
from mailsupport.db.upsert import insert_ignoring_conflict
from mailsupport.errors import InvalidValueError

_KEY_NAME = "signing-key"  # the settings row, not a key itself; signs bounce addresses
_REPLY_KEY = "reply-key"
_PREVIOUS_REPLY_KEY = "reply-key-previous"  # only to tell the operator why an address failed
# The day (see core.replyaddr.day_number) addresses without a day of their own count as
# issued on: the upgrade that started dating them. Absent: there are none.
UNDATED_REPLY_DAY = "undated-reply-addresses-issued"


@dataclass(frozen=True)
class ReplyKeys:
    """What reply addresses are checked with."""

    current: bytes  # signs new addresses; the only one that lets an address act
    previous: bytes | None  # the one rotated away, to recognise its addresses as outdated
    undated_day: int | None


def _value(session: Session, key: str) -> str | None:
    return session.execute(select(Setting.value).where(Setting.key == key)).scalar()


def _generated(session: Session, key: str) -> str:
    """The row's value, generated once and kept.

    Concurrent first starts race to insert; the insert ignores the loser's value so every
    daemon ends up with the same key.
    """
    found = _value(session, key)
    if found is None:
        values = {"key": key, "value": secrets.token_hex(32)}
        session.execute(insert_ignoring_conflict(session, Setting, values, ["key"]))
        found = _value(session, key)
        assert found is not None
    return found


def server_secret(session: Session, config: Config) -> bytes:
    """The key for bounce addresses: from the config, else generated once and kept."""
    if config.support.secret:
        return config.support.secret.encode()
    return _generated(session, _KEY_NAME).encode()


def reply_keys(session: Session, config: Config) -> ReplyKeys:
    """The keys for reply addresses: the config's secret, else the database's own."""
    undated = _value(session, UNDATED_REPLY_DAY)
    undated_day = int(undated) if undated is not None else None
    if config.support.secret:
        return ReplyKeys(config.support.secret.encode(), None, undated_day)
    previous = _value(session, _PREVIOUS_REPLY_KEY)
    return ReplyKeys(
        _generated(session, _REPLY_KEY).encode(),
        previous.encode() if previous is not None else None,
        undated_day,
    )


def rotate_reply_key(session: Session, config: Config) -> None:
    """Replace the reply key: every reply address given out so far stops acting."""
    if config.support.secret:
        raise InvalidValueError(
            "The reply addresses are signed with [support] secret from the configuration;"
            " change it there (which also changes the key of bounce addresses)."
        )
    old = _generated(session, _REPLY_KEY)
    for key, value in ((_PREVIOUS_REPLY_KEY, old), (_REPLY_KEY, secrets.token_hex(32))):
        row = session.get(Setting, key, with_for_update=True)
        if row is None:
            session.add(Setting(key=key, value=value))
        else:
            row.value = value
    session.flush()
