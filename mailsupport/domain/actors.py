"""Who did something, as recorded in events: a short, greppable string."""

from __future__ import annotations

import getpass

SYSTEM = "system"


def contact_actor(email: str) -> str:
    return f"contact:{email}"


def operator_actor(email: str) -> str:
    return f"operator:{email}"


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"
