"""Command lines at the top of an operator's reply, and #time durations."""

from __future__ import annotations

import pytest

from mailsupport.core.commands import (
    KNOWN,
    MAX_MINUTES,
    Command,
    parse_duration,
    split_commands,
    split_time_args,
)
from mailsupport.errors import InvalidValueError


def names(text: str) -> list[str]:
    return [command.name for command in split_commands(text).commands]


def test_every_documented_command_is_known() -> None:
    assert {"status", "assign", "take", "priority", "queue", "note", "time", "close"} == KNOWN


def test_block_then_body() -> None:
    block = split_commands(
        "#status waiting\n#assign alice\n\n#time 30m phone call\n\nHello Jane,\n\nfixed.\n"
    )
    assert block.commands == (
        Command("status", "waiting", "#status waiting"),
        Command("assign", "alice", "#assign alice"),
        Command("time", "30m phone call", "#time 30m phone call"),
    )
    assert block.body == "Hello Jane,\n\nfixed.\n"
    assert block.unknown == ()


def test_no_commands_keeps_the_text() -> None:
    block = split_commands("\n\nHello Jane,\n#status closed\n")
    assert block.commands == ()
    assert block.body == "Hello Jane,\n#status closed\n"


def test_commands_only() -> None:
    block = split_commands("#note\n\n#take\n")
    assert names("#note\n\n#take\n") == ["note", "take"]
    assert block.body == ""


def test_names_are_case_insensitive_and_arguments_kept_as_written() -> None:
    block = split_commands("#STATUS  Waiting For Customer  \n#Priority High\nok")
    assert [(c.name, c.args) for c in block.commands] == [
        ("status", "Waiting For Customer"),
        ("priority", "High"),
    ]


def test_unknown_commands_stay_in_the_block() -> None:
    block = split_commands("#stauts closed\n#close\nThanks")
    assert names("#stauts closed\n#close\nThanks") == ["stauts", "close"]
    assert [command.name for command in block.unknown] == ["stauts"]
    assert not block.commands[0].known
    assert block.body == "Thanks"


@pytest.mark.parametrize(
    "first_line",
    [
        "#1 priority for us is your printer.",
        "# Heading",
        "#hashtag, as they say",
        "#",
        "Hello #status closed",
        "> #status closed",
        "-- ",
    ],
)
def test_prose_that_looks_like_a_command(first_line: str) -> None:
    block = split_commands(f"{first_line}\n#status closed\n")
    assert block.commands == ()
    assert block.body.startswith(first_line)


def test_prose_line_ends_the_block() -> None:
    block = split_commands("#take\n#1 priority is the printer.\n#close")
    assert names("#take\n#1 priority is the printer.\n#close") == ["take"]
    assert block.body == "#1 priority is the printer.\n#close"


def test_rendered_html_indentation_and_invisible_characters() -> None:
    block = split_commands("\u200b  #status waiting\r\n\xa0\r\n   Hello\r\n")
    assert names("\u200b  #status waiting\n") == ["status"]
    assert block.commands[0].args == "waiting"
    assert block.body == "   Hello\n"


def test_signature_right_after_commands_is_body() -> None:
    assert split_commands("#note\n-- \nBob").body == "-- \nBob"


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30m", 30),
        ("1h", 60),
        ("1h30m", 90),
        ("1h 30m", 90),
        ("1h30", 90),
        ("1.5h", 90),
        ("1,5h", 90),
        ("90", 90),
        ("2h 15m", 135),
        ("45 min", 45),
        ("45 minutes", 45),
        ("2 hours", 120),
        ("1 ч 30 мин", 90),
        ("2ч", 120),
        ("15 мин", 15),
        ("1:30", 90),
        ("0.25h", 15),
        ("168h", MAX_MINUTES),
        ("30M", 30),
    ],
)
def test_durations(text: str, minutes: int) -> None:
    assert parse_duration(text) == minutes


@pytest.mark.parametrize(
    "text", ["", "abc", "1.5", "-30m", "30m 1h", "1d", "1h 1h", "m", "1e3", "1 hour and a half"]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidValueError, match=r"^Not a duration: .*\.$"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0", "0m", "0h0m", "0:00", "0.001h"])
def test_zero_durations(text: str) -> None:
    with pytest.raises(InvalidValueError, match="at least one minute"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["169h", "10081", "1000h", "99999999999999999999h"])
def test_absurd_durations(text: str) -> None:
    with pytest.raises(InvalidValueError, match="more than a week"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("30m support call", (30, "support call")),
        ("30m", (30, "")),
        ("2h 15m onsite visit", (135, "onsite visit")),
        ("1h 30 remote", (90, "remote")),
        ("45 min call", (45, "call")),
        ("1 ч 30 мин консультация", (90, "консультация")),
        ("90   Remote  Work ", (90, "Remote Work")),
        ("30m 2 calls", (30, "2 calls")),
    ],
)
def test_time_arguments(args: str, expected: tuple[int, str]) -> None:
    assert split_time_args(args) == expected


@pytest.mark.parametrize("args", ["", "   ", "soon support", "0m call"])
def test_bad_time_arguments(args: str) -> None:
    with pytest.raises(InvalidValueError):
        split_time_args(args)
