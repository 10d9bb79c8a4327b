"""Commands step: carry out an operator's ``#status``, ``#assign``... lines.

Each command goes through the same domain function as the CLI, so it records the same events
and the customer gets the same notices. A mail's commands are all carried out or none is: when
one is unknown or refused, the others are undone too (some refusals are known only once a
command runs), so the operator can correct the mail and send it again without anything
happening twice. Every command is answered with the reason it was refused, or that it could
have run, so nothing an operator asked for is silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from mailsupport.core.commands import Command, split_time_args
from mailsupport.db.models import Operator, Ticket, TicketStatus
from mailsupport.domain.actors import operator_actor
from mailsupport.domain.operators import find_operator
from mailsupport.domain.tickets import (
    add_time,
    assign,
    change_status,
    find_queue,
    parse_priority,
    parse_status,
    set_priority,
    set_queue,
    tentatively,
)
from mailsupport.errors import InvalidValueError, MailsupportError


@dataclass(frozen=True)
class CommandResult:
    line: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class _Context:
    session: Session
    ticket: Ticket
    operator: Operator
    now: datetime

    @property
    def actor(self) -> str:
        return operator_actor(self.operator.email)


def _needs(args: str, what: str) -> str:
    if not args.strip():
        raise InvalidValueError(f"needs {what}")
    return args.strip()


def _status(c: _Context, args: str) -> str:
    status = parse_status(_needs(args, "a status"))
    changed = change_status(c.session, c.ticket, status, actor=c.actor, now=c.now)
    return f"status {status}" if changed else f"already {status}"


def _close(c: _Context, args: str) -> str:
    return _status(c, TicketStatus.CLOSED)


def _assign(c: _Context, args: str) -> str:
    operator = find_operator(c.session, _needs(args, "an operator"))
    assign(c.session, c.ticket, operator, actor=c.actor, now=c.now)
    return f"assigned to {operator.name}"


def _take(c: _Context, args: str) -> str:
    assign(c.session, c.ticket, c.operator, actor=c.actor, now=c.now)
    return f"assigned to {c.operator.name}"


def _priority(c: _Context, args: str) -> str:
    priority = parse_priority(_needs(args, "a priority"))
    set_priority(c.session, c.ticket, priority, actor=c.actor, now=c.now)
    return f"priority {priority}"


def _queue(c: _Context, args: str) -> str:
    queue = find_queue(c.session, _needs(args, "a queue"))
    set_queue(c.session, c.ticket, queue, actor=c.actor, now=c.now)
    return f"queue {queue.name}"


def _time(c: _Context, args: str) -> str:
    minutes, work_type = split_time_args(_needs(args, "a duration such as 30m"))
    add_time(c.session, c.ticket, c.operator, minutes, work_type, now=c.now)
    return f"{minutes} min recorded" + (f" ({work_type})" if work_type else "")


def _note(c: _Context, args: str) -> str:
    return "kept internal"


_HANDLERS: dict[str, Callable[[_Context, str], str]] = {
    "status": _status,
    "close": _close,
    "assign": _assign,
    "take": _take,
    "priority": _priority,
    "queue": _queue,
    "time": _time,
    "note": _note,
}


def run_commands(
    session: Session,
    ticket: Ticket,
    operator: Operator,
    commands: Sequence[Command],
    now: datetime,
) -> list[CommandResult]:
    """Carry out the commands, all of them or, when any is unknown or refused, none."""
    if not commands:
        return []
    context = _Context(session, ticket, operator, now)
    with tentatively(session) as tentative:
        results = [_run(context, command) for command in commands]
        tentative.keep = all(r.ok for r in results)
    return results


def _run(context: _Context, command: Command) -> CommandResult:
    handler = _HANDLERS.get(command.name)
    if handler is None:
        return CommandResult(command.line, False, "unknown command")
    try:
        return CommandResult(command.line, True, handler(context, command.args))
    except MailsupportError as exc:
        return CommandResult(command.line, False, str(exc))
