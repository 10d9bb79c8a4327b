"""Addresses taken out of text: an operator's own, before their reply reaches the customer.

Replies reach the customer from the support address so that the conversation stays on the
ticket, and so that an operator's own mailbox is not handed out. A signature ("Alice Smith |
alice@staff.example | +1 555 0100") would give it away all the same, so each of the operator's
addresses in the relayed text is replaced by the address the reply comes from. A ``+tag``
form of an address reaches the same mailbox and is replaced too; a longer address that merely
contains one (``malice@...``, ``...@staff.example.org``) is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Characters that may stand next to an address without being part of it are anything but
# these: a letter or digit, or what continues a local part or a domain.
_LOCAL_CHARS = r"[\w.!#$%&'*+/=?^`{|}~-]"
_DOMAIN_CONTINUES = r"(?![\w-]|\.[\w-])"


def _pattern(address: str) -> re.Pattern[str] | None:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    local = local.split("+", 1)[0]
    return re.compile(
        rf"(?<!{_LOCAL_CHARS}){re.escape(local)}(?:\+[\w.=-]*)?@{re.escape(domain)}{_DOMAIN_CONTINUES}",
        re.IGNORECASE,
    )


def replace_addresses(text: str, addresses: Iterable[str], replacement: str) -> str:
    """``text`` with every occurrence of ``addresses`` (any case, any ``+tag``) replaced."""
    for address in sorted(set(addresses), key=len, reverse=True):
        pattern = _pattern(address)
        if pattern is not None:
            text = pattern.sub(replacement, text)
    return text
