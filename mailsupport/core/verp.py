"""Signed bounce addresses (VERP): one return path per outgoing message.

Each mail leaves with ``support+bounce-<outbox id>-<signature>@example.com`` as its envelope
sender, so a report that comes back names the message it is about whatever shape the report
itself has. The signature is an HMAC of the id under a server secret: without it anyone could
send us a fake bounce for any outbox id and get a customer marked undeliverable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from mailsupport.core.subaddress import extension, split_address

SIGNATURE_LENGTH = 10
_TAG = "bounce"

# "<local>+bounce-<id>-<signature>" once the base local part has been matched; ids are plain
# decimal numbers without a sign or leading zeros so that each id has exactly one address.
_SUFFIX = re.compile(r"\+" + _TAG + r"-(0|[1-9][0-9]{0,18})-([a-z2-7]+)")


def signature(outbox_id: int, secret: bytes) -> str:
    """The first characters of the lower-case, unpadded base32 HMAC-SHA256 of the id."""
    digest = hmac.new(secret, str(outbox_id).encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()[:SIGNATURE_LENGTH]


def bounce_address(base: str, outbox_id: int, secret: bytes) -> str:
    """The envelope sender for outbox row ``outbox_id`` of mail sent as ``base``."""
    if outbox_id < 0:
        raise ValueError(f"an outbox id is never negative: {outbox_id}")
    local, domain = split_address(base)
    if not local or not domain:
        raise ValueError(f"not an e-mail address: {base!r}")
    return f"{local}+{_TAG}-{outbox_id}-{signature(outbox_id, secret)}@{domain}"


def is_bounce_address(address: str, base: str) -> bool:
    """Whether ``address`` has the shape of a bounce address of ``base``, signed or not.

    Only delivery reports belong there; whatever else arrives (a responder answering the
    return path, as RFC 3834 has it do, or a stray) is no customer writing to us, forged
    signature or not.
    """
    rest = extension(address, base)
    return rest is not None and rest.startswith(f"+{_TAG}-")


def parse_bounce_address(address: str, base: str, secret: bytes) -> int | None:
    """The outbox id that ``address`` was signed for, or None when it is not one of ours."""
    rest = extension(address, base)
    match = _SUFFIX.fullmatch(rest) if rest is not None else None
    if match is None:
        return None
    outbox_id = int(match.group(1))
    expected = signature(outbox_id, secret)
    # A mail server may fold the case of a local part, so compare what was signed in lower case.
    if not hmac.compare_digest(match.group(2).encode("ascii"), expected.encode("ascii")):
        return None
    return outbox_id
