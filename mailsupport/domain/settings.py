"""Server state kept in the database: the signing secret when the config names none."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.db.models import Setting
from mailsupport.db.upsert import insert_ignoring_conflict

_KEY_NAME = "signing-key"  # the settings row, not a key itself


def server_secret(session: Session, config: Config) -> bytes:
    """The key for signed addresses: from the config, else generated once and kept.

    Concurrent first starts race to insert; the insert ignores the loser's value so every
    daemon ends up with the same key.
    """
    if config.support.secret:
        return config.support.secret.encode()
    query = select(Setting.value).where(Setting.key == _KEY_NAME)
    found = session.execute(query).scalar()
    if found is None:
        values = {"key": _KEY_NAME, "value": secrets.token_hex(32)}
        session.execute(insert_ignoring_conflict(session, Setting, values, ["key"]))
        found = session.execute(query).scalar_one()
    return found.encode()
