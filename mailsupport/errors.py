"""Typed exceptions. The CLI turns each into one clear sentence; none carries a traceback out."""

from __future__ import annotations


def first_line(error: object) -> str:
    """The first non-blank line of an error's text, "" when it has none.

    Drivers and libraries explain themselves over many lines (SQL, parameters, links); one line
    is what a log summary, a quarantine reason or a CLI message has room for.
    """
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


class MailsupportError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(MailsupportError):
    """The configuration is invalid; the message names the key."""


class MessageParseError(MailsupportError):
    """A raw message cannot be parsed at all; the message says why."""


class NotFoundError(MailsupportError):
    """Something named by the user does not exist ("No such ticket: 42")."""


class InvalidValueError(MailsupportError):
    """A value given by the user is not acceptable ("Unknown status: done")."""


class StorageError(MailsupportError):
    """The raw message could not be durably stored; the sender should try again later."""


class MailboxError(MailsupportError):
    """An IMAP mailbox cannot be reached or used; the message names the account and why."""


class HeldMessageError(MailsupportError):
    """A message the pipeline must not act on by itself: quarantined, the message says why."""
