"""An operator's addresses replaced in the text relayed to the customer."""

from __future__ import annotations

import pytest

from mailsupport.core.redact import replace_addresses

OWN = ("alice@staff.example", "a.smith@phone.example")
SUPPORT = "support@example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice | alice@staff.example | +1 555", f"Alice | {SUPPORT} | +1 555"),
        ("Write to <alice@staff.example>.", f"Write to <{SUPPORT}>."),
        ("mailto:alice@staff.example?subject=x", f"mailto:{SUPPORT}?subject=x"),
        ("Mail ALICE@Staff.Example.", f"Mail {SUPPORT}."),
        ("Or A.Smith@phone.example, any time", f"Or {SUPPORT}, any time"),
        ("Sorting: alice+tickets@staff.example", f"Sorting: {SUPPORT}"),
        ("(alice@staff.example)\nalice@staff.example", f"({SUPPORT})\n{SUPPORT}"),
    ],
)
def test_own_addresses_are_replaced(text: str, expected: str) -> None:
    assert replace_addresses(text, OWN, SUPPORT) == expected


@pytest.mark.parametrize(
    "text",
    [
        "malice@staff.example wrote to us",
        "bob.alice@staff.example",
        "alice@staff.example.org",
        "alice@staff.examples",
        "alice@sub.staff.example is another host",
        "alice at staff.example",
    ],
)
def test_other_addresses_are_left_alone(text: str) -> None:
    assert replace_addresses(text, OWN, SUPPORT) == text


def test_no_addresses_leave_the_text_as_it_is() -> None:
    assert replace_addresses("Hello alice@staff.example", (), SUPPORT) == "Hello alice@staff.example"
