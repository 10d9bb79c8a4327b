"""Signed bounce addresses: what we sign comes back as the same outbox id, nothing else does."""

from __future__ import annotations

import hmac
import re
from unittest import mock

import pytest

from mailsupport.core import verp
from mailsupport.core.verp import bounce_address, parse_bounce_address

BASE = "support@example.com"
SECRET = b"a server secret of reasonable length"


@pytest.mark.parametrize("outbox_id", [0, 1, 1042, 2**40])
def test_round_trip(outbox_id: int) -> None:
    address = bounce_address(BASE, outbox_id, SECRET)
    assert parse_bounce_address(address, BASE, SECRET) == outbox_id


def test_address_shape() -> None:
    address = bounce_address(BASE, 1042, SECRET)
    assert re.fullmatch(r"support\+bounce-1042-[a-z2-7]{10}@example\.com", address)


def test_signature_depends_on_id_and_secret() -> None:
    signatures = {verp.signature(outbox_id, SECRET) for outbox_id in range(200)}
    assert len(signatures) == 200
    assert verp.signature(7, SECRET) != verp.signature(7, b"another secret")


def test_wrong_signature_is_refused() -> None:
    address = bounce_address(BASE, 1042, SECRET)
    local, domain = address.split("@")
    last = "a" if local[-1] != "a" else "b"
    assert parse_bounce_address(f"{local[:-1]}{last}@{domain}", BASE, SECRET) is None
    assert parse_bounce_address(address, BASE, b"another secret") is None


def test_signature_of_another_id_is_refused() -> None:
    signature = verp.signature(1042, SECRET)
    forged = f"support+bounce-1043-{signature}@example.com"
    assert parse_bounce_address(forged, BASE, SECRET) is None


def test_other_base_is_refused() -> None:
    address = bounce_address(BASE, 1042, SECRET)
    assert parse_bounce_address(address, "help@example.com", SECRET) is None
    assert parse_bounce_address(address, "support@example.org", SECRET) is None
    moved = address.replace("@example.com", "@mail.example.com")
    assert parse_bounce_address(moved, BASE, SECRET) is None
    prefixed = "x" + address
    assert parse_bounce_address(prefixed, BASE, SECRET) is None


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "@",
        "support@example.com",
        "support+bounce@example.com",
        "support+bounce-@example.com",
        "support+bounce-12-@example.com",
        "support+bounce--1-aaaaaaaaaa@example.com",
        "support+bounce-x-aaaaaaaaaa@example.com",
        "support+bounce-1-aaaaaaaaaa-extra@example.com",
        "support+bounce-1-\u00e4aaaaaaaaa@example.com",
        "support+reply-1-aaaaaaaaaa@example.com",
        "no at sign",
        "support+bounce-1-aaaaaaaaaa",
        "\x00\xff@\n",
    ],
)
def test_garbage_is_refused(garbage: str) -> None:
    assert parse_bounce_address(garbage, BASE, SECRET) is None


def test_leading_zeros_are_not_another_spelling() -> None:
    signature = verp.signature(42, SECRET)
    assert parse_bounce_address(f"support+bounce-042-{signature}@example.com", BASE, SECRET) is None


def test_case_of_local_part_and_domain_does_not_matter() -> None:
    address = bounce_address(BASE, 1042, SECRET)
    assert parse_bounce_address(address.upper(), BASE, SECRET) == 1042
    assert parse_bounce_address(address, BASE.upper(), SECRET) == 1042
    assert parse_bounce_address(f"<{address}>", BASE, SECRET) == 1042


def test_signature_is_compared_in_constant_time() -> None:
    address = bounce_address(BASE, 1042, SECRET)
    with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        assert parse_bounce_address(address, BASE, SECRET) == 1042
        assert parse_bounce_address(address.replace("-1042-", "-1043-"), BASE, SECRET) is None
    assert compare.call_count == 2


def test_unusable_input_to_bounce_address_raises() -> None:
    with pytest.raises(ValueError, match="negative"):
        bounce_address(BASE, -1, SECRET)
    with pytest.raises(ValueError, match="not an e-mail address"):
        bounce_address("support", 1, SECRET)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (bounce_address(BASE, 7, SECRET), True),
        ("SUPPORT+Bounce-7-forgedforg@Example.COM", True),  # unsigned: still no customer's
        ("support+bounce-@example.com", True),
        ("support@example.com", False),
        ("support+1042-abc@example.com", False),
        ("support+bouncer@example.com", False),
        ("support+bounce-7-x@other.test", False),
        ("supportive+bounce-7-x@example.com", False),
    ],
)
def test_is_bounce_address(address: str, expected: bool) -> None:
    assert verp.is_bounce_address(address, BASE) is expected
