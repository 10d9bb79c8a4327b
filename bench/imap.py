"""IMAP intake against Dovecot: push latency, and the rate at which a backlog is taken in.

usage: python bench/imap.py [--mails 50] [--backlog 2000] [--corpus DIR] [--seed 1] [--keep]

Dovecot is started as the tests start it (bench/imapd.py), ``mailsupport serve`` runs in a
process of its own with one IMAP account, a pipeline worker and a do-nothing relay, and
everything is measured in this run, because the machines this runs on are noisy.

(a) latency: one mail at a time is appended to the account's folder by another client; the
    time from the APPEND until its ticket message is in the database, with IDLE.
    Goal: p50 < 2 s.
(b) backlog: the corpus (``../shared/bench/gen_corpus.py``) is moved into the folder in one
    server-side MOVE while the daemon idles; mails/s until every mail is taken in (stored
    with its checkpoint; each batch is moved to Processed right after), against a plain
    mail-parser parse loop over the same files. Goal: >= 0.6 x the parse rate. The pipeline
    works on the mail meanwhile, as in service; the rate until every mail is processed is
    shown too, for context (that is the pipeline's own speed, which bench/intake.py measures).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import imapd
import mailparser
from aiosmtpd.controller import Controller
from imapclient import IMAPClient

REPO = Path(__file__).resolve().parent.parent
GEN_CORPUS = REPO.parent / "shared" / "bench" / "gen_corpus.py"
SUPPORT_ADDRESS = "support@support.example"
TAG = "Support"
LATENCY_GOAL = 2.0  # seconds, p50 of (a)
RATE_GOAL = 0.6  # (b) taken in / parse rate
POLL = 0.005  # seconds between database checks while timing one mail
FOLDER = "Support"
STAGING = "Staging"


@dataclass(frozen=True)
class Options:
    mails: int
    backlog: int
    corpus: Path | None
    seed: int
    keep: bool


@dataclass(frozen=True)
class Backlog:
    count: int
    stored_seconds: float
    processed_seconds: float
    tickets: int
    quarantined: int

    @property
    def stored_rate(self) -> float:
        return self.count / self.stored_seconds

    @property
    def processed_rate(self) -> float:
        return self.count / self.processed_seconds


# --- surroundings -----------------------------------------------------------------------------


class _NullRelay:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@contextlib.contextmanager
def null_relay() -> Iterator[int]:
    """A relay that accepts and drops: the acknowledgements are sent as in service."""
    controller = Controller(_NullRelay(), hostname=imapd.HOST, port=imapd.free_port())
    controller.start()
    try:
        yield int(controller.port)
    finally:
        controller.stop()


def build_corpus(options: Options, workdir: Path) -> list[Path]:
    target = options.corpus
    if target is None or not any(target.glob("*.eml")):
        if not GEN_CORPUS.is_file():
            sys.exit(f"bench/imap.py: {GEN_CORPUS} not found; it needs the shared bench folder.")
        target = target or workdir / "corpus"
        command = [sys.executable, str(GEN_CORPUS), str(options.backlog), str(target)]
        subprocess.run([*command, "--no-mbox", "--seed", str(options.seed)], check=True)
    files = sorted(target.glob("*.eml"))[: options.backlog]
    if len(files) < options.backlog:
        sys.exit(f"bench/imap.py: only {len(files)} .eml files in {target}")
    return files


def write_config(directory: Path, server: Any, relay: int) -> Path:
    path = directory / "mailsupport.toml"
    path.write_text(
        f'[support]\naddress = "{SUPPORT_ADDRESS}"\ntag = "{TAG}"\n\n'
        f'[database]\nurl = "sqlite:///{directory / "mailsupport.db"}"\n\n'
        f"[smtp]\nenabled = false\n\n"
        f'[relay]\nhost = "{imapd.HOST}"\nport = {relay}\n\n'
        f"[pipeline]\nworkers = 1\n\n"
        f'[[imap]]\nname = "bench"\nhost = "{server.host}"\nport = {server.port}\n'
        f'tls = "none"\nusername = "{server.user}"\npassword = "{server.password}"\n'
        f'folder = "{FOLDER}"\nafter = "move:Processed"\n'
    )
    return path


def client(server: Any) -> Any:
    connection = IMAPClient(server.host, server.port, ssl=False, timeout=120)
    connection.login(server.user, server.password)
    return connection


def _one(db: sqlite3.Connection, sql: str, *args: Any) -> Any:
    row = db.execute(sql, args).fetchone()
    return row[0] if row else None


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"bench/imap.py: timed out waiting for {what}")
        time.sleep(interval)


def _connected(db: sqlite3.Connection) -> bool:
    ready = "SELECT count(*) FROM imap_checkpoints WHERE connected AND last_success_at"
    try:
        return bool(_one(db, ready))
    except sqlite3.OperationalError:
        return False  # the schema is still being created


@contextlib.contextmanager
def daemon(directory: Path, server: Any, relay: int) -> Iterator[sqlite3.Connection]:
    """``mailsupport serve`` with its account idling on the folder; yields a read connection."""
    directory.mkdir(parents=True)
    config = write_config(directory, server, relay)
    command = [sys.executable, "-m", "mailsupport", "-c", str(config), "serve"]
    with (directory / "serve.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, cwd=REPO)
    try:
        database = directory / "mailsupport.db"
        wait_until(database.exists, 60, "the database")
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
        wait_until(lambda: _connected(db), 60, "the IMAP account to connect")
        time.sleep(0.5)  # the first sync done, the poller is in IDLE
        yield db
        db.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


# --- (a) latency ------------------------------------------------------------------------------


def _latency_mail(number: int) -> tuple[str, bytes]:
    message_id = make_msgid(f"latency{number}", domain="customer.test")
    raw = (
        f"From: Carol Customer <carol{number}@customer.test>\r\n"
        f"To: {SUPPORT_ADDRESS}\r\nSubject: Latency probe {number}\r\n"
        f"Message-ID: {message_id}\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThe printer is jammed again.\r\n"
    )
    return message_id.strip("<>"), raw.encode()


def measure_latency(server: Any, db: sqlite3.Connection, count: int) -> list[float]:
    sender = client(server)
    sql = "SELECT 1 FROM messages WHERE message_id = ?"
    latencies: list[float] = []
    try:
        for number in range(count):
            message_id, raw = _latency_mail(number)
            started = time.monotonic()
            sender.append(FOLDER, raw)
            wait_until(lambda m=message_id: _one(db, sql, m), 60, "a ticket", interval=POLL)
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
    finally:
        sender.logout()
    return latencies


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# --- (b) backlog ------------------------------------------------------------------------------


def stage(server: Any, files: Sequence[Path]) -> None:
    """Put the corpus in a folder the daemon does not watch (not timed)."""
    connection = client(server)
    try:
        connection.create_folder(FOLDER)
        connection.create_folder(STAGING)
        for path in files:
            connection.append(STAGING, path.read_bytes())
    finally:
        connection.logout()


def measure_backlog(server: Any, db: sqlite3.Connection, count: int) -> Backlog:
    before = _one(db, "SELECT count(*) FROM inbound")
    tickets_before = _one(db, "SELECT count(*) FROM tickets")
    mover = client(server)
    try:
        mover.select_folder(STAGING)
        uids = mover.search(["ALL"])
        started = time.monotonic()
        mover.move(uids, FOLDER)
    finally:
        mover.logout()
    stored_sql = "SELECT count(*) FROM inbound"
    wait_until(lambda: _one(db, stored_sql) - before >= count, 600, "the backlog to be stored")
    stored = time.monotonic() - started
    done_sql = "SELECT count(*) FROM inbound WHERE state != 'pending'"
    wait_until(lambda: _one(db, done_sql) - before >= count, 900, "the backlog to be processed")
    processed = time.monotonic() - started
    quarantined = _one(db, "SELECT count(*) FROM inbound WHERE state = 'quarantined'")
    tickets = _one(db, "SELECT count(*) FROM tickets") - tickets_before
    return Backlog(count, stored, processed, tickets, quarantined)


def parse_rate(files: Sequence[Path]) -> float:
    """mail-parser alone over the same files: the baseline of (b)."""
    blobs = [path.read_bytes() for path in files]
    started = time.monotonic()
    for raw in blobs:
        mailparser.parse_from_bytes(raw)
    return len(blobs) / (time.monotonic() - started)


# --- main -------------------------------------------------------------------------------------


def parse_args() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=50, help="mails timed for (a)")
    parser.add_argument("--backlog", type=int, default=2000, help="corpus mails for (b)")
    parser.add_argument("--corpus", type=Path, help="a gen_corpus.py output to reuse")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    return Options(args.mails, args.backlog, args.corpus, args.seed, args.keep)


def report(latencies: Sequence[float], backlog: Backlog, parsed: float) -> None:
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    ratio_stored = backlog.stored_rate / parsed
    ratio = backlog.processed_rate / parsed
    verdict_a = "met" if p50 < LATENCY_GOAL else "NOT met"
    verdict_b = "met" if ratio_stored >= RATE_GOAL else "NOT met"
    print(f"(a) append -> ticket, IDLE, {len(latencies)} mails:")
    print(
        f"    p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, mean "
        f"{statistics.mean(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        f"  (goal p50 < {LATENCY_GOAL:.0f} s: {verdict_a})"
    )
    print(f"(b) backlog of {backlog.count} corpus mails:")
    print(f"    mail-parser parse loop      {parsed:8.1f} mails/s  (baseline)")
    print(
        f"    taken in (IMAP -> inbox)    {backlog.stored_rate:8.1f} mails/s  "
        f"= {ratio_stored:.2f} x parse  (goal >= {RATE_GOAL} x: {verdict_b})"
    )
    print(
        f"    processed (-> tickets)      {backlog.processed_rate:8.1f} mails/s  "
        f"= {ratio:.2f} x parse  (the pipeline, for context)"
    )
    print(f"    {backlog.tickets} tickets, {backlog.quarantined} quarantined")


def main() -> None:
    options = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mailsupport-bench-imap-"))
    try:
        files = build_corpus(options, workdir)
        try:
            server = imapd.start_dovecot()
        except imapd.Unavailable as exc:
            sys.exit(f"bench/imap.py: {exc}")
        try:
            stage(server, files)
            with null_relay() as relay, daemon(workdir / "run", server, relay) as db:
                latencies = measure_latency(server, db, options.mails)
                backlog = measure_backlog(server, db, len(files))
        finally:
            server.stop()
        report(latencies, backlog, parse_rate(files))
    finally:
        if options.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
