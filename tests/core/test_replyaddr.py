"""Signed reply addresses: the ticket comes back from the address, the operator from the token."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from mailsupport.core.replyaddr import (
    TOKEN_LENGTH,
    ReplyTarget,
    day_number,
    is_expired,
    parse_reply_address,
    reply_address,
    token,
    token_matches,
)
from mailsupport.core.verp import bounce_address

BASE = "support@example.com"
SECRET = b"a server secret of reasonable length"
DAY = day_number(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))  # 20514


def test_address_shape() -> None:
    address = reply_address(BASE, 1042, 7, SECRET, DAY)
    assert re.fullmatch(r"support\+1042-[a-z2-7]{3}-[a-z2-7]{26}@example\.com", address)
    assert TOKEN_LENGTH == 26  # 128 bits in unpadded base32


def test_day_numbers_are_utc_days_since_1970() -> None:
    assert day_number(datetime(1970, 1, 1, 23, 59, tzinfo=UTC)) == 0
    assert DAY == 20514
    late = datetime.fromisoformat("2026-03-02T23:30:00-05:00")  # 04:30 on the 3rd in UTC
    assert day_number(late) == DAY + 1


@pytest.mark.parametrize("ticket", [0, 1, 1042, 10**12])
@pytest.mark.parametrize("day", [0, 1, 31, 32, DAY, 32**7 - 1])
def test_round_trip(ticket: int, day: int) -> None:
    target = parse_reply_address(reply_address(BASE, ticket, 7, SECRET, day), BASE)
    assert target is not None
    assert (target.ticket_number, target.issued_day) == (ticket, day)
    assert token_matches(target, 7, SECRET)


def test_token_is_bound_to_operator_ticket_day_and_secret() -> None:
    target = parse_reply_address(reply_address(BASE, 1042, 7, SECRET, DAY), BASE)
    assert target is not None
    assert not token_matches(target, 8, SECRET)
    assert not token_matches(target, 7, b"another secret")
    assert not token_matches(ReplyTarget(1043, target.token, DAY), 7, SECRET)
    # Moving the day on (to make an old address young again) breaks the signature.
    assert not token_matches(ReplyTarget(1042, target.token, DAY + 90), 7, SECRET)
    assert not token_matches(ReplyTarget(1042, target.token, None), 7, SECRET)


def test_a_dated_address_cannot_be_rewritten_in_the_undated_form() -> None:
    address = reply_address(BASE, 1042, 7, SECRET, DAY)
    local, domain = address.split("@")
    number, _day, signed = local.removeprefix("support+").split("-")
    undated = parse_reply_address(f"support+{number}-{signed}@{domain}", BASE)
    assert undated == ReplyTarget(1042, signed, None)
    assert not token_matches(undated, 7, SECRET)


def test_undated_addresses_from_before_are_still_read() -> None:
    old = f"support+1042-{token(1042, 7, SECRET, None)}@example.com"
    target = parse_reply_address(old, BASE)
    assert target == ReplyTarget(1042, token(1042, 7, SECRET, None), None)
    assert token_matches(target, 7, SECRET)


def test_token_is_the_truncated_hmac() -> None:
    tokens = {token(1042, operator, SECRET, DAY) for operator in range(100)}
    assert len(tokens) == 100
    assert token(1, 23, SECRET, DAY) != token(12, 3, SECRET, DAY)
    assert token(1, 2, SECRET, 3) != token(1, 23, SECRET, None)


def test_case_is_ignored_everywhere() -> None:
    address = reply_address(BASE, 1042, 7, SECRET, DAY).upper()
    target = parse_reply_address(f"<{address}>", "Support@Example.COM")
    assert target is not None
    assert token_matches(target, 7, SECRET)


def test_local_part_with_dots_and_plus() -> None:
    base = "help.desk+eu@example.com"
    target = parse_reply_address(reply_address(base, 5, 1, SECRET, DAY), base)
    assert target == ReplyTarget(5, token(5, 1, SECRET, DAY), DAY)


@pytest.mark.parametrize(
    ("issued", "today", "expired"),
    [(DAY, DAY, False), (DAY, DAY + 90, False), (DAY, DAY + 91, True), (DAY, DAY - 1, False)],
)
def test_an_address_expires_after_its_lifetime(issued: int, today: int, expired: bool) -> None:
    assert is_expired(ReplyTarget(1, "x", issued), today, 90, None) is expired


def test_an_undated_address_counts_as_issued_on_the_day_given() -> None:
    undated = ReplyTarget(1, "x", None)
    assert not is_expired(undated, DAY + 90, 90, DAY)
    assert is_expired(undated, DAY + 91, 90, DAY)
    assert is_expired(undated, DAY, 90, None)  # no such day: there were none before


@pytest.mark.parametrize(
    "address",
    [
        BASE,
        "support+1042@example.com",
        "support+1042-abc@example.com",  # token too short
        "support+01042-" + "a" * 26 + "@example.com",  # leading zero
        "support+1042-aab-" + "a" * 26 + "@example.com",  # a day with a leading zero
        "support+1042--" + "a" * 26 + "@example.com",
        "support+1042-a1b-" + "a" * 26 + "@example.com",  # a day not in base32
        "support+1042-baaaaaaa-" + "a" * 26 + "@example.com",  # a day of eight digits
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
    forged = "support+1042-kaa-" + "a" * 26 + "@example.com"
    target = parse_reply_address(forged, BASE)
    assert target == ReplyTarget(1042, "a" * 26, 10 * 32 * 32)
    assert not token_matches(target, 7, SECRET)


@pytest.mark.parametrize(
    ("base", "ticket", "operator", "day"),
    [
        ("support@example.com", -1, 1, DAY),
        ("support@example.com", 1, -1, DAY),
        ("support@example.com", 1, 1, -1),
        ("nobody", 1, 1, DAY),
    ],
)
def test_refuses_impossible_input(base: str, ticket: int, operator: int, day: int) -> None:
    with pytest.raises(ValueError, match=r"."):
        reply_address(base, ticket, operator, SECRET, day)
