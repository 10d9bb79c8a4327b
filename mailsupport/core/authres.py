"""Proof of a sender's identity from the Authentication-Results our MTA added.

Invariant 6: the From header alone proves nothing, since anyone can write any From. A mail
that claims to come from an operator may act as that operator when the signed reply address
checks out (replyaddr) or when the receiving MTA we trust verified the sender's domain and
recorded so in an Authentication-Results header (RFC 8601). This module decides the second.

What counts, and why:

- Only on mail that came through our MTA: handed over by a trusted relay, the gateway or an
  IMAP account configured to trust its provider. Mail that reached the listener directly
  carries whatever headers its sender wrote, the topmost one included (``is_trusted_peer``;
  the pipeline passes ``trusted=False`` for the rest).
- Only the topmost Authentication-Results header. Our MTA adds its header on top of the
  message; everything below it arrived with the message and may have been written by the
  sender. (An A-R header above ours cannot exist: nothing handles the message between our MTA
  and the inbox.) The MTA must add its header and should remove incoming ones that claim its
  authserv-id, as RFC 8601 section 5 asks and OpenDKIM, OpenDMARC and rspamd do; when DKIM and
  DMARC are verified by separate milters that each add a header, the topmost one must carry
  the deciding result (rspamd writes one header with all of them).
- Only when its authserv-id is the one configured as ours, compared without regard to case.
- A pass is ``dkim=pass`` whose signing domain (``header.d``, or the domain of ``header.i``)
  is exactly the From domain, or ``dmarc=pass`` whose ``header.from`` is the From domain.
  DKIM's relaxed alignment (a signature by the organisational domain) is not accepted: it
  needs the public suffix list to be done correctly, and ``dmarc=pass`` already covers it.

Parsing is done by ``authres``, the RFC 8601 module of the dkimpy author, which handles
comments, quoting, folding and several results per header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import authres  # type: ignore[import-untyped]

_HEADER = "authentication-results"


@dataclass(frozen=True)
class Proof:
    """Whether the sender is proven, with one line saying why either way for the event log."""

    ok: bool
    reason: str


@dataclass(frozen=True)
class _Result:
    """One method's outcome, reduced to what the decision reads."""

    method: str
    result: str
    properties: tuple[tuple[str, str], ...]  # ("header.d", "example.com") ...

    def get(self, name: str) -> str:
        return next((value for key, value in self.properties if key == name), "")

    def __str__(self) -> str:
        shown = " ".join(f"{key}={value}" for key, value in self.properties if key != "header.b")
        return f"{self.method}={self.result}" + (f" {shown}" if shown else "")


def is_trusted_peer(peer: str, trusted_relays: Iterable[str]) -> bool:
    """Whether the client address ``peer`` is in one of the ``trusted_relays`` networks."""
    try:
        address = ipaddress.ip_address(peer.strip().strip("[]").partition("%")[0])
    except ValueError:
        return False  # no IP address: nothing we were told to trust
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d
    return any(address in ipaddress.ip_network(network, strict=False) for network in trusted_relays)


def verify_sender(
    headers: Sequence[tuple[str, str]],
    from_address: str,
    trusted_authserv_id: str,
    *,
    trusted: bool,
) -> Proof:
    """Whether the topmost Authentication-Results from our MTA proves ``from_address``'s domain.

    ``trusted`` says whether the mail came through our MTA at all; when not, no header counts.
    """
    authserv = trusted_authserv_id.strip().lower()
    if not authserv:
        return Proof(False, "no trusted authserv-id configured")
    domain = _domain(from_address)
    if not domain:
        return Proof(False, f"the From address {from_address!r} has no domain")
    value = _topmost(headers, trusted=trusted)
    if isinstance(value, Proof):
        return value
    parsed = _parse(value)
    if parsed is None:
        return Proof(False, "the topmost Authentication-Results header cannot be parsed")
    authserv_id, results = parsed
    if authserv_id != authserv:
        return Proof(
            False,
            f"the topmost Authentication-Results header is from {authserv_id!r}, "
            f"not from {authserv!r}",
        )
    return _decide(results, domain, authserv_id)


def _topmost(headers: Sequence[tuple[str, str]], *, trusted: bool) -> str | Proof:
    """The topmost Authentication-Results header's value, or the refusal when none counts."""
    value = next((v for k, v in headers if k.strip().lower() == _HEADER), None)
    if value is None:
        return Proof(False, "no Authentication-Results header")
    if not trusted:
        return Proof(
            False,
            "an Authentication-Results header on mail that did not come through a trusted"
            " relay, ignored (a sender may write any)",
        )
    return value


def _decide(results: Sequence[_Result], domain: str, authserv_id: str) -> Proof:
    for result in results:
        if result.result != "pass":
            continue
        if result.method == "dkim":
            signer = _dkim_domain(result)
            if signer == domain:
                return Proof(True, f"{result} for {domain}, verified by {authserv_id}")
        elif result.method == "dmarc" and result.get("header.from").lower() == domain:
            return Proof(True, f"{result}, verified by {authserv_id}")
    seen = "; ".join(str(result) for result in results) or "no results"
    return Proof(False, f"no dkim or dmarc pass for {domain} from {authserv_id} ({seen})")


def _dkim_domain(result: _Result) -> str:
    signer = result.get("header.d").strip().lower().rstrip(".")
    if signer:
        return signer
    identity = result.get("header.i")
    _, at, identity_domain = identity.rpartition("@")
    return identity_domain.strip().lower().rstrip(".") if at else ""


def _parse(value: str) -> tuple[str, tuple[_Result, ...]] | None:
    """authserv-id (lower case) and results of one header value; None when unparseable."""
    # Exchange ends the header with ";", which the grammar (and so authres) refuses.
    unfolded = " ".join(value.split()).rstrip("; ")
    try:
        header: Any = authres.AuthenticationResultsHeader.parse_value(unfolded)
    except (authres.core.AuthResError, ValueError, IndexError, TypeError):
        return None
    authserv_id = str(header.authserv_id or "").strip().lower()
    if not authserv_id:
        return None
    return authserv_id, tuple(_result(item) for item in header.results)


def _result(item: Any) -> _Result:
    properties: Iterable[Any] = item.properties or ()
    return _Result(
        method=str(item.method).lower(),
        result=str(item.result).lower(),
        properties=tuple(
            (f"{prop.type}.{prop.name}".lower(), str(prop.value)) for prop in properties
        ),
    )


def _domain(address: str) -> str:
    """Lower-case domain of an address, with any angle brackets or trailing dot removed."""
    _, at, domain = address.strip().strip("<>").rpartition("@")
    return domain.strip().lower().rstrip(".") if at else ""
