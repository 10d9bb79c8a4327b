"""The bounds kept on values read from mail, and the columns they protect."""

from __future__ import annotations

import pytest

from mailsupport.core.limits import (
    MAX_ADDRESS,
    MAX_MESSAGE_ID,
    address_problem,
    bounded_message_id,
)
from mailsupport.db.models import Contact, Inbound, Message, OutboxRecipient


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.com",
        "l" * 64 + "@example.com",
        "l" * 65 + "@example.com",  # over RFC 5321's limit, but servers take it
        "и" * 33 + "@example.com",  # 66 octets of local part
        "ann@" + "d" * 251 + ".com",  # a 255-character domain
        "l" * 64 + "@" + "d" * 251 + ".com",  # 320 in all
        "иван@пример.рф",
        '"quoted@local"@example.com',
        "no-at-sign",
    ],
)
def test_addresses_a_mailbox_may_have(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("ann@" + "d" * 252 + ".com", "its domain is longer than 255 octets"),
        ("l" * 400 + "@example.com", "it is longer than 320 octets"),
        ("и" * 160 + "@example.com", "it is longer than 320 octets"),  # 160 characters
        ("l" * 321, "it is longer than 320 octets"),
        ("ann\x00@example.com", "it contains control characters"),
    ],
)
def test_addresses_no_mailbox_can_have(address: str, problem: str) -> None:
    assert address_problem(address) == problem


def test_the_bounds_are_those_of_the_columns() -> None:
    for column in (Contact.email, Message.from_email, OutboxRecipient.address):
        assert column.type.length == MAX_ADDRESS
    for column in (Message.message_id, Inbound.message_id):
        assert column.type.length == MAX_MESSAGE_ID


def test_message_ids_that_fit_are_kept() -> None:
    fitting = "m" * (MAX_MESSAGE_ID - 10) + "@a.example"
    assert bounded_message_id(fitting) == fitting


def test_long_message_ids_keep_their_start_and_stay_apart() -> None:
    first, second = ("m" * 1500 + f"{n}@a.example" for n in (1, 2))
    bounded = bounded_message_id(first)
    assert len(bounded) == MAX_MESSAGE_ID
    assert bounded.startswith("m" * 900)
    assert bounded == bounded_message_id(first)
    assert bounded != bounded_message_id(second)
