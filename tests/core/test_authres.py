"""Proof of identity from the topmost Authentication-Results header of our own MTA."""

from __future__ import annotations

import pytest

from mailsupport.core.authres import Proof, is_trusted_peer, verify_sender

OURS = "mx.example.com"


def verify(headers: list[tuple[str, str]], address: str, authserv_id: str) -> Proof:
    """The decision on mail that came through our MTA."""
    return verify_sender(headers, address, authserv_id, trusted=True)


def headers(*results: str, received: bool = True) -> list[tuple[str, str]]:
    """A header list with the given A-R values, topmost first, as a message carries them."""
    found: list[tuple[str, str]] = []
    if received:
        found.append(("Received", "from mail.customer.example by mx.example.com"))
    found.extend(("Authentication-Results", value) for value in results)
    found.extend([("From", "Alice <alice@customer.example>"), ("Subject", "Re: [ACME #1]")])
    return found


def test_dkim_pass_for_the_from_domain() -> None:
    proof = verify(
        headers(f"{OURS}; dkim=pass header.d=customer.example header.s=s1 header.b=AbC"),
        "alice@customer.example",
        OURS,
    )
    assert proof.ok
    assert "dkim=pass" in proof.reason
    assert "customer.example" in proof.reason
    assert "header.b" not in proof.reason


def test_dkim_pass_by_identity() -> None:
    proof = verify(
        headers(f"{OURS}; dkim=pass header.i=@customer.example header.s=s1"),
        "Alice@Customer.Example",
        OURS,
    )
    assert proof.ok


def test_dmarc_pass() -> None:
    proof = verify(
        headers(
            f"{OURS}; spf=pass smtp.mailfrom=bounce.esp.example; dmarc=pass (p=reject)"
            " header.from=customer.example"
        ),
        "alice@customer.example",
        OURS,
    )
    assert proof.ok
    assert proof.reason.startswith("dmarc=pass")


def test_dkim_pass_for_another_domain() -> None:
    proof = verify(
        headers(f"{OURS}; dkim=pass header.d=esp.example; spf=pass smtp.mailfrom=customer.example"),
        "alice@customer.example",
        OURS,
    )
    assert not proof.ok
    assert "no dkim or dmarc pass for customer.example" in proof.reason
    assert "dkim=pass header.d=esp.example" in proof.reason


def test_parent_domain_signature_is_not_enough() -> None:
    proof = verify(
        headers(f"{OURS}; dkim=pass header.d=example.com"), "alice@mail.example.com", OURS
    )
    assert not proof.ok


def test_subdomain_signature_is_not_enough() -> None:
    proof = verify(
        headers(f"{OURS}; dkim=pass header.d=mail.customer.example"),
        "alice@customer.example",
        OURS,
    )
    assert not proof.ok


@pytest.mark.parametrize("result", ["fail", "neutral", "temperror", "none", "policy"])
def test_dkim_without_pass(result: str) -> None:
    proof = verify(
        headers(f"{OURS}; dkim={result} header.d=customer.example"), "alice@customer.example", OURS
    )
    assert not proof.ok
    assert f"dkim={result}" in proof.reason


def test_dmarc_pass_for_another_domain() -> None:
    proof = verify(
        headers(f"{OURS}; dmarc=pass header.from=attacker.example"), "alice@customer.example", OURS
    )
    assert not proof.ok


def test_header_from_another_authserv_id() -> None:
    proof = verify(
        headers("mx.attacker.example; dkim=pass header.d=customer.example"),
        "alice@customer.example",
        OURS,
    )
    assert not proof.ok
    assert "'mx.attacker.example'" in proof.reason


def test_authserv_id_is_compared_without_case() -> None:
    proof = verify(
        headers("MX.Example.COM; dkim=pass header.d=customer.example"),
        "alice@customer.example",
        " mx.EXAMPLE.com ",
    )
    assert proof.ok


def test_forged_header_below_ours_is_ignored() -> None:
    # The sender put a pass claiming our authserv-id into the message; our MTA's own header,
    # added on top, found no valid signature.
    proof = verify(
        headers(
            f"{OURS}; dkim=fail header.d=customer.example; dmarc=fail header.from=customer.example",
            f"{OURS}; dkim=pass header.d=customer.example",
        ),
        "alice@customer.example",
        OURS,
    )
    assert not proof.ok
    assert "dkim=fail" in proof.reason


def test_only_the_topmost_header_counts_even_when_ours_has_no_results() -> None:
    proof = verify(
        headers(f"{OURS}; none", f"{OURS}; dkim=pass header.d=customer.example"),
        "alice@customer.example",
        OURS,
    )
    assert not proof.ok
    assert "no results" in proof.reason


def test_comments_folding_and_spacing() -> None:
    value = (
        f"(received by us) {OURS} (version 1) ;\r\n\tspf=pass (sender IP is 192.0.2.1)"
        " smtp.mailfrom=customer.example;\r\n  dkim = pass (2048-bit key; unprotected)"
        ' header.d = "customer.example" header.s=s1 header.b="Ab+C/=";'
        "dmarc=pass action=none header.from=customer.example;compauth=pass reason=100"
    )
    proof = verify(headers(value), "alice@customer.example", OURS)
    assert proof.ok, proof.reason


def test_outlook_style_header() -> None:
    value = (
        "spf.protection.outlook.com; spf=pass (sender IP is 192.0.2.1)"
        " smtp.mailfrom=customer.example; dkim=pass (signature was verified)"
        " header.d=customer.example;dmarc=pass action=none header.from=customer.example;"
    )
    proof = verify(headers(value), "alice@customer.example", "spf.protection.outlook.com")
    assert proof.ok


def test_missing_header() -> None:
    proof = verify(headers(), "alice@customer.example", OURS)
    assert proof == proof.__class__(False, "no Authentication-Results header")


def test_no_trusted_authserv_id() -> None:
    proof = verify(
        headers(f"{OURS}; dkim=pass header.d=customer.example"), "alice@customer.example", " "
    )
    assert not proof.ok
    assert proof.reason == "no trusted authserv-id configured"


@pytest.mark.parametrize("value", [";;;", "", "   ", f"{OURS}; dkim", "(only a comment)"])
def test_unparseable_header(value: str) -> None:
    proof = verify(headers(value), "alice@customer.example", OURS)
    assert not proof.ok


@pytest.mark.parametrize("address", ["", "alice", "alice@", "<>"])
def test_from_without_domain(address: str) -> None:
    proof = verify(headers(f"{OURS}; dkim=pass header.d=customer.example"), address, OURS)
    assert not proof.ok
    assert "has no domain" in proof.reason


def test_header_names_are_matched_without_case() -> None:
    proof = verify(
        [("authentication-RESULTS", f"{OURS}; dkim=pass header.d=customer.example")],
        "alice@customer.example",
        OURS,
    )
    assert proof.ok


def test_reasons_are_one_line() -> None:
    value = f"{OURS};\r\n\tdkim=fail\r\n\theader.d=customer.example"
    proof = verify(headers(value), "alice@customer.example", OURS)
    assert "\n" not in proof.reason


def test_nothing_counts_on_mail_that_did_not_come_through_our_mta() -> None:
    proof = verify_sender(
        headers(f"{OURS}; dkim=pass header.d=customer.example"),
        "alice@customer.example",
        OURS,
        trusted=False,
    )
    assert not proof.ok
    assert "did not come through a trusted relay" in proof.reason


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("127.0.0.1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", True),
        ("10.2.0.1", False),
        ("2001:db8::25", True),
        ("2001:db9::25", False),
        ("203.0.113.5", False),
        ("", False),
        ("/run/mailsupport/lmtp", False),
    ],
)
def test_trusted_peers(peer: str, trusted: bool) -> None:
    relays = ("127.0.0.1/32", "10.1.0.0/16", "2001:db8::/32")
    assert is_trusted_peer(peer, relays) is trusted
