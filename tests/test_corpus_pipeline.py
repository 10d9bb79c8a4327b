"""Every real-world mail of the shared corpus through store + pipeline.

Each file ends up stored and processed, or quarantined with a reason; nothing crashes or blocks
the files after it; no delivery status notification opens a ticket.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from mailsupport.app import open_app
from mailsupport.config import build_config
from mailsupport.db.inbox import RawMail, store_many
from mailsupport.db.models import Inbound, Message
from mailsupport.pipeline.runner import Pipeline

from _fixtures import config_data

pytestmark = pytest.mark.corpus

# Structural evidence of a DSN, independent of the screening code under test.
_DSN = re.compile(rb"report-type=\"?delivery-status|message/delivery-status", re.IGNORECASE)


def test_whole_corpus_is_stored_and_processed_or_quarantined(
    corpus_files: list[Path], sqlite_url: str
) -> None:
    config = build_config(config_data(sqlite_url), env={})
    app = open_app(config, migrate=True)
    files = corpus_files
    raws = {path: path.read_bytes() for path in files}
    with app.factory.begin() as session:
        stored = store_many(
            session, [RawMail(raw, "import") for raw in raws.values()], app.clock.now()
        )
    ids = {path: s.inbound_id for path, s in zip(files, stored, strict=True)}
    processed = Pipeline(app.factory, config, app.clock).process_pending()

    with app.factory() as session:
        rows = {row.id: row for row in session.execute(select(Inbound)).scalars()}
        with_ticket = set(session.execute(select(Message.inbound_id)).scalars())
    app.close()

    states = Counter(row.state for row in rows.values())
    kinds = Counter(row.kind for row in rows.values())
    reasons = Counter(
        (row.quarantine_reason or "").split(":")[0]
        for row in rows.values()
        if row.state == "quarantined"
    )
    print(f"\ncorpus: {len(files)} files, {len(rows)} distinct stored, {processed} processed now")
    print(f"states: {dict(states)}")
    print(f"kinds: {dict(kinds)}")
    print(f"tickets opened or followed: {len(with_ticket)}; quarantine reasons: {dict(reasons)}")

    assert set(states) <= {"processed", "quarantined"}
    assert all(row.quarantine_reason for row in rows.values() if row.state == "quarantined")
    dsn_with_ticket = [
        str(p) for p, raw in raws.items() if _DSN.search(raw) and ids[p] in with_ticket
    ]
    assert dsn_with_ticket == []
    # Mail that is not a message at all (reply-body fragments, headerless bodies) is set aside
    # as unusable; any other reason would be a crash in a pipeline step.
    assert set(reasons) <= {"unparseable", "unusable"}
