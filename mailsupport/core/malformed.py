"""A mailbox from a From, Reply-To or Sender value too malformed for a strict reader.

Real mail carries senders such as ``<power quadrant system@example.com>`` (a name where the
address should be), ``"..."@example.com>`` (a stray bracket) or ``Test test@example.com`` (no
brackets at all). mail-parser finds no mailbox in them, and without a sender the mail would
be quarantined. When the value holds exactly one address, it is read the way a lenient
reader does: what stands in angle brackets is the address, its local part quoted when it has
spaces (as the email package's modern parser reads it); otherwise the one word with an "@" is
the address and the words around it the name.
"""

from __future__ import annotations

import re

from mailsupport.core.message import Address

# What a local part or a domain can be made of here: anything but white space, brackets,
# quotes and the separators of an address list.
_ATOM = r"[^\s<>()\[\],;:@\"]+"
_QUOTED = r"\"[^\"]*\""
_LOOSE_ADDRESS = re.compile(rf"(?:{_QUOTED}|{_ATOM})@{_ATOM}")
_BRACKETED = re.compile(r"<([^<>]*)>?")
_DOMAIN = re.compile(rf"{_ATOM}|\[[^\[\]\s]+\]")
_NAME_JUNK = " \t\"'<>,;"


def recover_mailbox(value: str) -> Address | None:
    """The one mailbox ``value`` (a decoded header value) names, or None when it names none
    or several."""
    brackets = [found for found in _BRACKETED.finditer(value) if "@" in found.group(1)]
    if len(brackets) > 1:
        return None
    if brackets:
        bracketed = brackets[0]
        address = _bracketed_address(bracketed.group(1))
        name = value[: bracketed.start()] + value[bracketed.end() :]
    else:
        found = _LOOSE_ADDRESS.findall(value)
        if len(found) != 1:
            return None
        address = found[0]
        name = value.replace(address, " ", 1)
    if address is None:
        return None
    return Address(address.lower(), " ".join(name.strip(_NAME_JUNK).split()))


def _bracketed_address(inner: str) -> str | None:
    local, _, domain = inner.strip().rpartition("@")
    local, domain = " ".join(local.split()), domain.strip()
    if not local or not _DOMAIN.fullmatch(domain):
        return None
    if " " in local and not (local.startswith('"') and local.endswith('"')):
        local = '"' + local.replace("\\", "").replace('"', "") + '"'
    return f"{local}@{domain}"
