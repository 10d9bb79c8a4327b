"""The null return path ``<>`` in the forms it reaches us in.

A module of its own because the mail gateway needs it and must not load screening's patterns
for every message an MTA pipes to it.
"""

from __future__ import annotations

# How <> is written where it cannot be empty: Postfix's pipe(8) passes it to a command as
# ${sender} = "MAILER-DAEMON" (unless null_sender= says otherwise), and some MTAs write it so in
# Return-Path.
_NULL_SENDERS = frozenset({"", "mailer-daemon"})


def is_null_sender(address: str | None) -> bool:
    """Whether an envelope sender or Return-Path is the null path ``<>`` (None: not known)."""
    return address is not None and address.strip().strip("<>").strip().lower() in _NULL_SENDERS
