"""Keep values read from mail within what the standards allow and the columns hold.

SQLite stores a string of any length in any column, PostgreSQL refuses one longer than its
``VARCHAR`` (and any NUL character). Without these bounds the same junk header would be
processed on one database and quarantine a customer's whole mail on the other. The numbers
are those of the columns in ``db.models`` (a test keeps them in step).
"""

from __future__ import annotations

import hashlib
import re

# RFC 5321 4.5.3.1: 64 octets of local part, 255 of domain; with the "@", the address column.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_ADDRESS = MAX_LOCAL_PART + 1 + MAX_DOMAIN

# A Message-ID cannot be folded, so RFC 5322's line limit bounds it; the columns hold as much.
MAX_MESSAGE_ID = 998

# ASCII control characters: no address or identifier holds one, and PostgreSQL stores no NUL.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGEST_LENGTH = 64  # sha256 in hex


def address_problem(address: str) -> str | None:
    """Why ``address`` cannot be anyone's mailbox, or None when it may be one.

    Only what cannot be stored or delivered is refused: the syntax of real mail is too varied
    to judge, and an address we merely cannot send to is still worth keeping on a ticket. A
    local part over RFC 5321's 64 octets is kept: mail servers take longer ones, and a customer
    whose provider hands them out must not be quarantined for it. Lengths are counted in UTF-8
    octets, as RFC 6531 counts them for internationalised addresses.
    """
    if CONTROL.search(address):
        return "it contains control characters"
    domain = address.rpartition("@")[2] if "@" in address else ""
    if _octets(address) > MAX_ADDRESS:
        return f"it is longer than {MAX_ADDRESS} octets"
    if _octets(domain) > MAX_DOMAIN:
        return f"its domain is longer than {MAX_DOMAIN} octets"
    return None


def _octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def bounded_message_id(message_id: str) -> str:
    """The id unchanged when it fits, else its start and a digest of all of it.

    The same long id always gives the same value, so a reply referring to it still threads,
    and two long ids that differ only near their end stay apart.
    """
    if len(message_id) <= MAX_MESSAGE_ID:
        return message_id
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{message_id[: MAX_MESSAGE_ID - _DIGEST_LENGTH - 1]}~{digest}"
