"""Attachment step: keep every attached file, named by a generated id.

The sender's filename is kept only as a display label (already made harmless by the parser);
content is stored once per distinct sha256, so a logo repeated in every signature costs once.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import insert
from sqlalchemy.orm import Session

from mailsupport.core.fingerprint import attachment_digest
from mailsupport.core.message import Attachment as ParsedAttachment
from mailsupport.db.models import Attachment, Blob, table_of
from mailsupport.db.upsert import prepared_insert_ignoring_conflict

_INSERT_ATTACHMENT = insert(table_of(Attachment))
_BLOBS = table_of(Blob)


def store_attachments(
    session: Session,
    message_row: int,
    attachments: tuple[ParsedAttachment, ...],
    digests: Sequence[str] | None = None,
) -> None:
    """Store the files of the (flushed) message ``message_row``.

    ``digests``, when the caller has worked them out, are the attachments' digests.
    """
    if digests is None:
        digests = [attachment_digest(item.content) for item in attachments]
    for position, (item, digest) in enumerate(zip(attachments, digests, strict=True)):
        values = {"sha256": digest, "size": item.size, "data": item.content}
        session.execute(prepared_insert_ignoring_conflict(session, _BLOBS, ("sha256",)), values)
        session.execute(
            _INSERT_ATTACHMENT,
            {
                "id": secrets.token_hex(16),
                "message_id": message_row,
                "position": position,
                "filename": item.filename[:255],
                "content_type": item.content_type[:255],
                "size": item.size,
                "sha256": digest,
            },
        )
