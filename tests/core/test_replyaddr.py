"""Signed reply addresses: the ticket comes back from the address, the operator from the token."""

from __future__ import annotations

import re

import pytest

from mailsupport.core.replyaddr import (
    TOKEN_LENGTH,
    ReplyTarget,
    parse_reply_address,
    reply_address,
    token,
    token_matches,
)
from mailsupport.core.verp import bounce_address

BASE = "support@example.com"
SECRET = b"a server secret of reasonable length"


def test_address_shape() -> None:
    address = reply_address(BASE, 1042, 7, SECRET)
    assert re.fullmatch(r"support\+1042-[a-z2-7]{26}@example\.com", address)
    assert TOKEN_LENGTH == 26  # 128 bits in unpadded base32


@pytest.mark.parametrize("ticket", [0, 1, 1042, 10**12])
def test_round_trip(ticket: int) -> None:
    target = parse_reply_address(reply_address(BASE, ticket, 7, SECRET), BASE)
    assert target is not None
    assert target.ticket_number == ticket
    assert token_matches(target, 7, SECRET)


def test_token_is_bound_to_operator_ticket_and_secret() -> None:
    target = parse_reply_address(reply_address(BASE, 1042, 7, SECRET), BASE)
    assert target is not None
    assert not token_matches(target, 8, SECRET)
    assert not token_matches(target, 7, b"another secret")
    moved = ReplyTarget(1043, target.token)
    assert not token_matches(moved, 7, SECRET)


def test_token_is_the_truncated_hmac() -> None:
    tokens = {token(1042, operator, SECRET) for operator in range(100)}
    assert len(tokens) == 100
    assert token(1, 23, SECRET) != token(12, 3, SECRET)


def test_case_is_ignored_everywhere() -> None:
    address = reply_address(BASE, 1042, 7, SECRET).upper()
    target = parse_reply_address(f"<{address}>", "Support@Example.COM")
    assert target is not None
    assert token_matches(target, 7, SECRET)


def test_local_part_with_dots_and_plus() -> None:
    base = "help.desk+eu@example.com"
    target = parse_reply_address(reply_address(base, 5, 1, SECRET), base)
    assert target == ReplyTarget(5, token(5, 1, SECRET))


@pytest.mark.parametrize(
    "address",
    [
        BASE,
        "support+1042@example.com",
        "support+1042-abc@example.com",  # token too short
        "support+01042-" + "a" * 26 + "@example.com",  # leading zero
        "support+-1-" + "a" * 26 + "@example.com",
        "support+1042-" + "a" * 27 + "@example.com",
        "support+1042-" + "1" * 26 + "@example.com",  # not base32
        "support+1042-" + "a" * 26 + "@example.org",
        "support+1042-" + "a" * 26 + "@mail.example.com",
        "xsupport+1042-" + "a" * 26 + "@example.com",
        "support+1042-" + "a" * 26,
        "",
        "@",
    ],
)
def test_not_reply_addresses(address: str) -> None:
    assert parse_reply_address(address, BASE) is None


def test_bounce_addresses_are_not_reply_addresses() -> None:
    assert parse_reply_address(bounce_address(BASE, 1042, SECRET), BASE) is None


def test_parse_does_not_check_the_token() -> None:
    forged = "support+1042-" + "a" * 26 + "@example.com"
    target = parse_reply_address(forged, BASE)
    assert target == ReplyTarget(1042, "a" * 26)
    assert not token_matches(target, 7, SECRET)


@pytest.mark.parametrize(
    ("base", "ticket", "operator"),
    [("support@example.com", -1, 1), ("support@example.com", 1, -1), ("nobody", 1, 1)],
)
def test_refuses_impossible_input(base: str, ticket: int, operator: int) -> None:
    with pytest.raises(ValueError, match=r"."):
        reply_address(base, ticket, operator, SECRET)
