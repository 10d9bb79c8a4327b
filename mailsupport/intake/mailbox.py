"""One IMAP account's folder over one connection: the commands the poller needs, nothing more.

What to fetch and when to act on the server is decided in ``intake/imap.py``; this module
only knows how to say it in IMAP, and how a server's capabilities change that.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import ssl
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from imapclient import IMAPClient

from mailsupport.config import ImapAccount
from mailsupport.errors import MailboxError

SEEN = rb"\Seen"
DELETED = rb"\Deleted"

# Fetched per round trip and committed per transaction: enough to amortise the latency and
# the disk flush, little enough to hold in memory.
BATCH_MESSAGES = 250
BATCH_BYTES = 32 * 1024 * 1024
# UIDs named in one command, keeping command lines far below servers' length limits.
COMMAND_UIDS = 500
# How often a wait in IDLE looks up to see whether the daemon is stopping.
STOP_CHECK_SECONDS = 1.0
# The first IDLE after looking at the folder, ended early to catch what the gap before it hid.
SETTLE_SECONDS = 0.5


class Finish(enum.StrEnum):
    """How the configured ``after`` action is carried out on a given server."""

    MOVE = "move"  # MOVE (RFC 6851) to the target folder
    COPY = "copy"  # COPY, then \Deleted and UID EXPUNGE of exactly those UIDs
    DELETE = "delete"  # \Deleted and UID EXPUNGE of exactly those UIDs
    MARK_DELETED = "mark-deleted"  # \Deleted only: removed by whoever expunges next
    FLAG = "flag"  # \Seen, left where it is


def finish_plan(action: str, capabilities: Collection[str]) -> Finish:
    """The way to carry out ``action`` with these server capabilities.

    Only UID EXPUNGE (UIDPLUS) removes exactly our messages: a plain EXPUNGE would also remove
    what other clients marked \\Deleted and may still undelete. Without it, nothing is expunged.
    """
    if action == "flag":
        return Finish.FLAG
    uidplus = "UIDPLUS" in capabilities
    if action == "delete":
        return Finish.DELETE if uidplus else Finish.MARK_DELETED
    if "MOVE" in capabilities:
        return Finish.MOVE
    return Finish.COPY if uidplus else Finish.FLAG


def unfinished_criteria(plan: Finish, last_uid: int) -> list[str]:
    """SEARCH criteria for stored messages (UID <= last_uid) still waiting for the action."""
    state = "UNSEEN" if plan is Finish.FLAG else "UNDELETED"
    return ["UID", f"1:{last_uid}", state]


def plan_batches(
    sizes: Mapping[int, int],
    max_messages: int = BATCH_MESSAGES,
    max_bytes: int = BATCH_BYTES,
) -> list[list[int]]:
    """UIDs in ascending order, cut into batches of bounded count and size."""
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for uid in sorted(sizes):
        if current and (len(current) >= max_messages or total + sizes[uid] > max_bytes):
            batches.append(current)
            current, total = [], 0
        current.append(uid)
        total += sizes[uid]
    if current:
        batches.append(current)
    return batches


def _chunks(uids: Sequence[int], size: int = COMMAND_UIDS) -> Iterator[list[int]]:
    for start in range(0, len(uids), size):
        yield list(uids[start : start + size])


def _announces_mail(response: Any) -> bool:
    return isinstance(response, tuple) and len(response) > 1 and response[1] == b"EXISTS"


@dataclass(frozen=True)
class Probe:
    """What ``mailsupport imap test`` reports: a look at the account that changes nothing."""

    capabilities: frozenset[str]
    folders: tuple[str, ...]
    messages: int
    new: int  # above the checkpoint: what the daemon would take in next
    uidvalidity: int
    target_exists: bool
    plan: Finish


def _connect(account: ImapAccount) -> Any:
    context = ssl.create_default_context()
    client = IMAPClient(
        account.host,
        account.port,
        ssl=account.tls == "ssl",
        ssl_context=context,
        timeout=account.timeout,
    )
    try:
        if account.tls == "starttls":
            client.starttls(context)
        client.login(account.username, account.secret())
    except BaseException:
        client.shutdown()
        raise
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        # IMAPClient turns imaplib's protocol trace on for its own debug log, and imaplib then
        # formats every response, whole messages included, before the log drops it: an eighth
        # of the time spent taking in a backlog.
        connection = getattr(client, "_imap", None)
        if connection is not None:
            connection.debug = 0
    return client


class Mailbox:
    """A logged-in connection to one account, working on its configured folder."""

    def __init__(self, account: ImapAccount, client: Any) -> None:
        self.account = account
        self._client = client
        self.capabilities = frozenset(
            c.decode("ascii", "replace").upper() if isinstance(c, bytes) else str(c).upper()
            for c in client.capabilities()
        )
        self.plan = finish_plan(account.after_action, self.capabilities)

    @classmethod
    def open(cls, account: ImapAccount) -> Mailbox:
        """Connect and log in; every failure is a MailboxError naming the account."""
        try:
            return cls(account, _connect(account))
        except MailboxError:
            raise
        except (OSError, IMAPClient.Error) as exc:
            raise MailboxError(
                f"Cannot log in to IMAP account {account.name} "
                f"({account.username}@{account.host}:{account.port}): {_describe(exc)}"
            ) from exc

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Log out; a connection that is already dead is just dropped."""
        try:
            self._client.logout()
        except Exception:
            with contextlib.suppress(OSError):
                self._client.shutdown()

    @property
    def idle_supported(self) -> bool:
        return "IDLE" in self.capabilities

    @property
    def target(self) -> str:
        return self.account.after_folder

    def prepare_target(self) -> None:
        """Create the folder mail is moved to when it does not exist yet."""
        if self.plan in (Finish.MOVE, Finish.COPY) and not self._client.folder_exists(self.target):
            self._client.create_folder(self.target)

    def select(self) -> int:
        """Select the account's folder for reading and writing; returns its UIDVALIDITY."""
        response = self._client.select_folder(self.account.folder)
        return int(response[b"UIDVALIDITY"])

    def new_uids(self, last_uid: int) -> list[int]:
        """UIDs above ``last_uid``, ascending.

        ``N:*`` always matches the highest UID in the folder, even when it is below N, so the
        answer is filtered rather than trusted.
        """
        found = self._client.search(["UID", f"{last_uid + 1}:*"])
        return sorted(int(uid) for uid in found if int(uid) > last_uid)

    @property
    def _imaplib(self) -> Any:
        # IMAPClient keeps the imaplib connection it drives here. Two things only it knows are
        # needed to follow IDLE reliably: responses it set aside, and bytes it read ahead.
        return getattr(self._client, "_imap", None)

    def _response_waiting(self) -> bool:
        """Whether a response is already there to read, in imaplib's buffer or on the socket.

        The server may send EXISTS right behind its IDLE continuation, in the same packet;
        imaplib then holds it in its buffer, where IMAPClient's idle_check, which only polls the
        socket, does not look.
        """
        reader = getattr(self._imaplib, "file", None)
        if reader is None or not hasattr(reader, "peek"):
            return False
        sock = self._client.socket()
        sock.setblocking(False)
        try:
            return bool(reader.peek(1))
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        finally:
            sock.settimeout(self.account.timeout)

    def take_announcements(self) -> bool:
        """Whether the server announced mail (EXISTS) along with an earlier answer; forgets it.

        imaplib keeps untagged responses aside until a command asks for them by name. Mail that
        arrived while a SEARCH ran is announced with that SEARCH's answer and never again in
        IDLE, so it would wait for the next IDLE refresh; and responses nobody asks for would
        pile up for as long as the connection lives.
        """
        stash = getattr(self._imaplib, "untagged_responses", None)
        if not isinstance(stash, dict):
            return False
        announced = "EXISTS" in stash
        stash.clear()
        return announced

    def unfinished(self, last_uid: int) -> list[int]:
        """Stored messages (UID <= last_uid) still in the folder without the after action."""
        if last_uid < 1:
            return []
        found = self._client.search(unfinished_criteria(self.plan, last_uid))
        return sorted(int(uid) for uid in found if int(uid) <= last_uid)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for chunk in _chunks(uids):
            for uid, data in self._client.fetch(chunk, ["RFC822.SIZE"]).items():
                sizes[int(uid)] = int(data.get(b"RFC822.SIZE", 0))
        return sizes

    def fetch(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The raw messages, fetched with BODY.PEEK[] so that \\Seen stays as it was.

        A UID missing from the answer was expunged by someone else in the meantime.
        """
        fetched = self._client.fetch(list(uids), ["BODY.PEEK[]"])
        return {
            int(uid): bytes(data[b"BODY[]"])
            for uid, data in fetched.items()
            if data.get(b"BODY[]") is not None
        }

    def finish(self, uids: Sequence[int]) -> None:
        """Carry out the after action on these (stored) messages."""
        for chunk in _chunks(uids):
            self._finish(chunk)

    def _finish(self, uids: list[int]) -> None:
        client, plan = self._client, self.plan
        if plan is Finish.MOVE:
            client.move(uids, self.target)
            return
        if plan is Finish.COPY:
            client.copy(uids, self.target)
        if plan in (Finish.COPY, Finish.DELETE):
            client.add_flags(uids, [DELETED], silent=True)
            client.uid_expunge(uids)
        elif plan is Finish.MARK_DELETED:
            client.add_flags(uids, [DELETED, SEEN], silent=True)
        elif plan is Finish.FLAG:
            client.add_flags(uids, [SEEN], silent=True)

    def wait_for_mail(self, stop: threading.Event, seconds: float) -> None:
        """Return when new mail may be there, after ``seconds``, or soon after ``stop``.

        Some servers (pymap) announce mail that arrived between the last command and IDLE only
        with the answer to the next command. The first IDLE is therefore short: the answer to
        its DONE tells about that mail, and only then does the long wait begin.
        """
        if not self.idle_supported:
            stop.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        if self._idle(stop, min(SETTLE_SECONDS, seconds)):
            return
        if deadline > time.monotonic():
            self._idle(stop, deadline - time.monotonic())

    def _idle(self, stop: threading.Event, seconds: float) -> bool:
        """One IDLE of at most ``seconds``; True when it ends with something to look at."""
        self._client.idle()
        deadline = time.monotonic() + seconds
        noticed = False
        while not stop.is_set() and not noticed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._response_waiting():
                noticed = True
                break
            step = min(left, STOP_CHECK_SECONDS)
            started = time.monotonic()
            responses = self._client.idle_check(timeout=step)
            # Woken with nothing complete to read: part of a response, or the server closed
            # the connection. Leaving IDLE lets the next command tell which.
            early = not responses and time.monotonic() - started < step / 2
            noticed = early or any(_announces_mail(r) for r in responses)
        _text, responses = self._client.idle_done()
        return noticed or stop.is_set() or any(_announces_mail(r) for r in responses)

    def probe(self, uidvalidity: int, last_uid: int) -> Probe:
        """Look at the account without changing anything (the folder is opened read-only).

        ``uidvalidity`` and ``last_uid`` are the stored checkpoint, to count what is new.
        """
        try:
            return self._probe(uidvalidity, last_uid)
        except (OSError, IMAPClient.Error) as exc:
            raise MailboxError(
                f"IMAP account {self.account.name}: cannot look at folder "
                f"{self.account.folder}: {_describe(exc)}"
            ) from exc

    def _probe(self, uidvalidity: int, last_uid: int) -> Probe:
        folders = tuple(str(name) for _flags, _delimiter, name in self._client.list_folders())
        response = self._client.select_folder(self.account.folder, readonly=True)
        messages = int(response.get(b"EXISTS", 0))
        current = int(response[b"UIDVALIDITY"])
        target = self.target
        return Probe(
            capabilities=self.capabilities,
            folders=folders,
            messages=messages,
            new=len(self.new_uids(last_uid)) if current == uidvalidity else messages,
            uidvalidity=current,
            target_exists=bool(target) and target in folders,
            plan=self.plan,
        )


def _describe(exc: BaseException) -> str:
    """The server's words, without the bytes literal imaplib wraps them in."""
    text = str(exc).strip()
    if text.startswith(("b'", 'b"')) and text[-1:] == text[1:2]:
        text = text[2:-1]
    return text or type(exc).__name__
