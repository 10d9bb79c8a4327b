"""A digest of what a mail says, for telling an auto-responder by its repetition.

A naive auto-responder sends no Auto-Submitted header and answers every mail with the same
text, usually quoting what it answers, sometimes under a new subject. The quote, the subject
and the headers therefore change from one answer to the next; the new text does not. The
digest is taken of that new text, its spacing and case evened out, and of the attachments'
digests, so that a person who sends several scans with empty bodies is not taken for a
machine. A mail that is all quote (a forward without a word of comment) is taken whole.

It is worked out from a message as stored (its text, the sha256 of each attachment), so that
the digest of a message stored long ago can be worked out when it is first needed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from mailsupport.core.quotes import strip_quoted

DIGEST_BYTES = 16  # hex: the 32 characters of ``messages.body_hash``


# Every history header ``strip_quoted`` knows holds a colon (or a full-width one) or is
# Outlook's "-----Original Message-----", and quoted lines start with ">". Text with none of
# them is taken as it is: stripping costs about a microsecond per character, more than the
# rest of processing a long mail. (The result may differ from stripping in trimmed separator
# lines; what counts is that one text always gets one digest.)
_MAY_QUOTE = re.compile(r"[>:\uff1a]|original message", re.IGNORECASE)


def _may_quote(text: str) -> bool:
    # ``_MAY_QUOTE.search`` alone takes about 50 us a mail in bench/intake.py's corpus (its
    # case-insensitive alternation is tried at every character); ``in`` finds a mark first in
    # about a quarter of them, which saves some 10 us a mail. Same answer either way.
    return ">" in text or ":" in text or "\uff1a" in text or _MAY_QUOTE.search(text) is not None


def fingerprint(text: str, attachment_digests: Sequence[str] = ()) -> str:
    """The digest of a message's ``text`` without what it quotes, and of its attachments."""
    new_text = (strip_quoted(text) or text) if _may_quote(text) else text
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    digest.update(" ".join(new_text.split()).casefold().encode("utf-8", "surrogatepass"))
    for attachment in attachment_digests:
        digest.update(b"\0" + attachment.encode("ascii"))
    return digest.hexdigest()


def cheap_to_fingerprint(text: str) -> bool:
    """Whether ``fingerprint`` takes ``text`` as it is, without stripping quotes (fast)."""
    return not _may_quote(text)


def attachment_digest(content: bytes) -> str:
    """An attachment's digest, the name its content is stored under."""
    return hashlib.sha256(content).hexdigest()
