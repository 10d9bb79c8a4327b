"""Command lines at the top of an operator's reply.

Operators work from their own mail client, so a ticket is changed by writing lines such as
``#status waiting`` or ``#time 30m phone call`` above the answer. This module only reads
them: it splits the command block from the prose that follows and turns durations into
minutes. What a command does, and whether this operator may do it, is decided by the
domain layer, so that the CLI and email share one set of rules.

The block is the run of ``#word`` lines at the very top, blank lines allowed between them;
the first other non-blank line ends it. ``#1 priority for us...`` (a digit) and ``# Heading``
(a space) are prose, as is ``#tag,`` (a word not followed by a space or the line end), so
ordinary text that happens to start with "#" still reaches the customer. A ``#word`` that is
not a known command stays in the block and is reported as unknown, so that a typo
(``#stauts closed``) is answered to the operator rather than mailed to the customer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mailsupport.errors import InvalidValueError

KNOWN: frozenset[str] = frozenset(
    {"status", "assign", "take", "priority", "queue", "note", "time", "close"}
)

# The longest duration one #time line may book: a week of round-the-clock work is already
# far beyond any real entry, so anything larger is a typo ("300h" for "3h").
MAX_MINUTES = 7 * 24 * 60

# A letter, then letters, digits, "_" or "-", then a space or the end of the line.
_COMMAND = re.compile(r"#([^\W\d_][\w-]*)(?:\s+(.*))?", re.DOTALL)

# Characters that HTML-to-text rendering and some clients put at the start of a line.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"

_NUMBER = r"\d+(?:[.,]\d+)?"
_HOURS = r"h|hr|hrs|hour|hours|ч|час|часа|часов"
_MINUTES = r"m|min|mins|minute|minutes|м|мин|минута|минуты|минут"
_DURATION = re.compile(
    rf"(?:(?P<hours>{_NUMBER})\s*(?:{_HOURS})\.?)?"
    rf"\s*(?:(?P<minutes>{_NUMBER})\s*(?P<unit>{_MINUTES})?\.?)?",
    re.IGNORECASE,
)
_CLOCK = re.compile(r"(\d{1,3}):([0-5]\d)")

# "#time 2h 15m call" may spread the duration over this many words before the work type.
_MAX_DURATION_WORDS = 4


@dataclass(frozen=True)
class Command:
    """One command line: the lower-cased word, its arguments as written, the line itself."""

    name: str
    args: str
    line: str

    @property
    def known(self) -> bool:
        return self.name in KNOWN


@dataclass(frozen=True)
class CommandBlock:
    """The commands at the top of a reply and the text that follows them."""

    commands: tuple[Command, ...]
    body: str

    @property
    def unknown(self) -> tuple[Command, ...]:
        return tuple(command for command in self.commands if not command.known)


def split_commands(text: str) -> CommandBlock:
    """Separate the command block at the top of ``text`` from the prose after it."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    commands: list[Command] = []
    end = len(lines)
    for index, line in enumerate(lines):
        stripped = line.strip().strip(_INVISIBLE).strip()
        if not stripped:
            continue
        command = parse_command_line(stripped)
        if command is None:
            end = index
            break
        commands.append(command)
    return CommandBlock(tuple(commands), _without_leading_blank_lines(lines[end:]))


def parse_command_line(line: str) -> Command | None:
    """The command on one stripped line, or None when the line is prose."""
    match = _COMMAND.fullmatch(line)
    if match is None:
        return None
    return Command(match.group(1).lower(), (match.group(2) or "").strip(), line)


def parse_duration(text: str) -> int:
    """Minutes in a duration such as "30m", "1h30m", "1.5h", "2h 15m", "90" or "1 ч 30 мин".

    A bare number is minutes; a bare number after hours is minutes too ("1h 30"). Raise
    InvalidValueError for anything else, for zero and for more than a week.
    """
    minutes = _minutes(text.strip())
    if minutes is None:
        raise InvalidValueError(
            f"Not a duration: {text.strip()!r}; write it like 30m, 1h30m or 1.5h."
        )
    if minutes <= 0:
        raise InvalidValueError(f"A duration must be at least one minute, not {text.strip()!r}.")
    if minutes > MAX_MINUTES:
        raise InvalidValueError(f"A duration of {text.strip()!r} is more than a week.")
    return minutes


def split_time_args(args: str) -> tuple[int, str]:
    """Minutes and work type of ``#time`` arguments: "30m support call" -> (30, "support call").

    The duration is the longest run of leading words that reads as one, so "2h 15m call" and
    "1 ч 30 мин консультация" work; the work type is "" when absent.
    """
    words = args.split()
    if not words:
        raise InvalidValueError("#time needs a duration, like #time 30m or #time 1h30m support.")
    for count in range(min(len(words), _MAX_DURATION_WORDS), 0, -1):
        if _minutes(" ".join(words[:count])) is not None:
            return parse_duration(" ".join(words[:count])), " ".join(words[count:])
    # Nothing reads as a duration: let parse_duration name the first word in its error.
    return parse_duration(words[0]), " ".join(words[1:])


def _minutes(text: str) -> int | None:
    """Whole minutes (rounded) in ``text``, or None when it is not a duration at all."""
    clock = _CLOCK.fullmatch(text)
    if clock:
        return int(clock.group(1)) * 60 + int(clock.group(2))
    match = _DURATION.fullmatch(text)
    if match is None or not (match.group("hours") or match.group("minutes")):
        return None
    hours = _number(match.group("hours"))
    minutes = _number(match.group("minutes"))
    if match.group("minutes") and not match.group("unit") and not minutes.is_integer():
        # "1.5" alone could mean hours or minutes; refuse rather than guess.
        return None
    total = hours * 60 + minutes
    if not math.isfinite(total):
        return None
    return math.floor(total + 0.5)


def _number(text: str | None) -> float:
    return float(text.replace(",", ".")) if text else 0.0


def _without_leading_blank_lines(lines: list[str]) -> str:
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    return "\n".join(lines[start:])
