"""IMAP intake: each configured account's folder emptied into the inbox, exactly once.

For every batch of new messages, in this order: fetch with BODY.PEEK[] by UID (so \\Seen is
left alone: a person may have read the mail, and it is never our cursor), store the raw mail
and advance the account's checkpoint in one transaction, then move, flag or delete the
messages on the server. A crash before the commit leaves the mail untouched on the server and
it is fetched again; a crash after it leaves stored mail in the folder, which gets its after
action on the next connection without being stored again.

Each account has a thread of its own that waits in IDLE (or polls where the server has no
IDLE), reconnects with backoff, and records how it fares in the database, so one account that
fails never holds up the others or the rest of the daemon.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from mailsupport.clock import Clock
from mailsupport.config import Config, ImapAccount
from mailsupport.db.imapstate import (
    FolderKey,
    open_checkpoint,
    record_disconnected,
    record_failure,
    record_success,
    store_batch,
)
from mailsupport.db.inbox import RawMail, Stored
from mailsupport.intake.mailbox import Mailbox, plan_batches

log = logging.getLogger(__name__)

CHANNEL = "imap"
RETRY_INITIAL_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0

StoredCallback = Callable[[Sequence[Stored]], None]


class AccountPoller:
    """Takes one account's mail in for as long as it runs."""

    def __init__(
        self,
        account: ImapAccount,
        factory: sessionmaker[Session],
        clock: Clock,
        on_stored: StoredCallback | None = None,
    ) -> None:
        self.account = account
        self.key = FolderKey(account.name, account.folder)
        self._factory = factory
        self._clock = clock
        self._on_stored = on_stored
        self._stop = threading.Event()
        self._last_uid = 0
        self._envelope_to = (account.address,) if account.address else ()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Thread body: serve the account until stopped, reconnecting with growing delays."""
        delay = RETRY_INITIAL_SECONDS
        while not self._stop.is_set():
            try:
                with self.connect() as box:
                    self.catch_up(box)
                    delay = RETRY_INITIAL_SECONDS
                    while not self._stop.is_set():
                        self.sync(box)
                        box.wait_for_mail(self._stop, self._wait_seconds(box))
            except Exception as exc:
                self._failed(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
        self._record(lambda session, now: record_disconnected(session, self.key, now))

    def run_once(self) -> int:
        """Connect, take in everything there is, and disconnect; returns how many were new."""
        with self.connect() as box:
            self.catch_up(box)
            return self.sync(box)

    def connect(self) -> Mailbox:
        return Mailbox.open(self.account)

    def catch_up(self, box: Mailbox) -> None:
        """Select the folder, load the checkpoint, and finish what a crash left undone."""
        box.prepare_target()
        uidvalidity = box.select()
        with self._factory.begin() as session:
            self._last_uid = open_checkpoint(session, self.key, uidvalidity, self._clock.now())
        unfinished = box.unfinished(self._last_uid)
        if unfinished:
            log.info(
                "imap %s: %d stored message(s) still in %s; finishing them (%s)",
                self.account.name,
                len(unfinished),
                self.account.folder,
                box.plan,
            )
            self.finish(box, unfinished)

    def sync(self, box: Mailbox) -> int:
        """Take in every message above the checkpoint, including any that arrive meanwhile.

        The folder is searched once more after the status is written, so that nothing but a
        round trip separates the last SEARCH from IDLE: servers may announce mail that arrives
        between a command and IDLE only with the answer to the next command.
        """
        new = self._take_all(box)
        self._record(lambda session, now: record_success(session, self.key, now))
        return new + self._take_all(box)

    def _take_all(self, box: Mailbox) -> int:
        new = 0
        while not self._stop.is_set():
            uids = box.new_uids(self._last_uid)
            if uids:
                new += self._take_in(box, uids)
            elif not box.take_announcements():
                break
        return new

    def _take_in(self, box: Mailbox, uids: list[int]) -> int:
        new = 0
        left = len(uids)
        for batch in plan_batches(box.sizes(uids)):
            left -= len(batch)
            new += self._take_batch(box, batch, left)
            if self._stop.is_set():
                break
        return new

    def _take_batch(self, box: Mailbox, batch: list[int], backlog: int) -> int:
        fetched = box.fetch(batch)
        uids = sorted(fetched)
        results = self.store([self._raw_mail(fetched[uid]) for uid in uids], batch[-1], backlog)
        self._last_uid = batch[-1]
        self._notify(results)
        self.finish(box, uids)
        new = sum(not r.duplicate for r in results)
        log.info(
            "imap %s: stored %d new message(s) up to UID %d (%d already stored)",
            self.account.name,
            new,
            batch[-1],
            len(results) - new,
        )
        return new

    def _raw_mail(self, raw: bytes) -> RawMail:
        return RawMail(
            raw,
            CHANNEL,
            None,
            self._envelope_to,
            self.account.queue or None,
            authres_trusted=self.account.trust_authentication_results,
        )

    def store(self, mails: list[RawMail], last_uid: int, backlog: int) -> list[Stored]:
        """Commit the mails and the checkpoint above them in one transaction."""
        with self._factory.begin() as session:
            return store_batch(
                session, self.key, mails, last_uid=last_uid, backlog=backlog, now=self._clock.now()
            )

    def finish(self, box: Mailbox, uids: list[int]) -> None:
        """The after action on the server; only ever for mail that is committed."""
        box.finish(uids)

    def _wait_seconds(self, box: Mailbox) -> float:
        return self.account.idle_refresh if box.idle_supported else self.account.poll_interval

    def _notify(self, results: Sequence[Stored]) -> None:
        if self._on_stored is None:
            return
        try:
            self._on_stored(results)
        except Exception:
            log.exception("new-mail notification failed; the backlog check will pick it up")

    def _failed(self, exc: Exception) -> None:
        error = str(exc) or type(exc).__name__
        log.error("imap %s: %s; retrying", self.account.name, error)
        self._record(lambda session, now: record_failure(session, self.key, error, now))

    def _record(self, change: Callable[[Session, datetime], None]) -> None:
        """Write the account's status; a database that fails here must not stop the poller."""
        try:
            with self._factory.begin() as session:
                change(session, self._clock.now())
        except Exception as exc:
            log.warning("imap %s: cannot record its status: %s", self.account.name, exc)


class ImapIntake:
    """A poller thread per configured account, started and stopped with the daemon."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        config: Config,
        clock: Clock,
        on_stored: StoredCallback | None = None,
    ) -> None:
        self.pollers = [AccountPoller(a, factory, clock, on_stored) for a in config.imap]
        self._running: list[tuple[AccountPoller, threading.Thread]] = []

    def start(self) -> None:
        for poller in self.pollers:
            thread = threading.Thread(
                target=poller.run, name=f"imap-{poller.account.name}", daemon=True
            )
            thread.start()
            self._running.append((poller, thread))

    def stop(self) -> None:
        """Stop every poller; each finishes the batch it is on (its commit and after action)."""
        for poller, _thread in self._running:
            poller.stop()
        for poller, thread in self._running:
            thread.join(timeout=poller.account.timeout * 2 + 5)
        self._running.clear()
