"""Outbound throughput: the outbox sender against a plain smtplib loop sending the same mails.

usage: python bench/outbound.py [--count N] [--rounds 3] [--recipients 1] [--seed 1]
                                [--no-pg] [--profile FILE]

Both measurements deliver the same rendered mails to the same do-nothing aiosmtpd sink, which
runs in a process of its own so that its CPU never takes the sender's GIL. Every figure is
compared with the baseline measured in the same round, because the machines this runs on are
noisy and absolute figures from elsewhere do not compare.

(plain) one ``smtplib.SMTP`` connection and ``sendmail()`` for each mail;
(ours)  the outbox: the mails are enqueued as pending rows first (untimed: in the daemon that
        happens in the transaction of the change that caused them), then ``OutboxSender``
        sends them as the scheduler does: claim with a lease, send over one reused
        connection, record each row's result in its own transaction before the relay gets
        the next mail's data. On SQLite (WAL) always; on PostgreSQL too when
        MAILSUPPORT_TEST_PG_URL is set, in a database of its own created and dropped here.

Durability, as in the daemon: the sender commits its claims and its results without waiting
for the disk (SQLite ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit = off``, on its own
connection only); a process crash loses none of them, an OS crash or power cut may lose the
last seconds' worth and those mails are sent again with the same Message-ID (see
mailsupport/outbound/sender.py). Committing each result with synchronous=FULL instead
measured about 0.7 x plain where this measures about 0.85-0.9 x. Results that are not the
common "every recipient took it" case are committed with ``synchronous=FULL`` as everything
else is.

The SQLite database goes in the temporary directory: if that is a tmpfs, set TMPDIR to a real
disk, or the fsyncs that remain (WAL checkpoints, the rows' enqueueing) cost nothing.

Goal: (ours on SQLite) >= 0.8 x (plain).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import multiprocessing
import os
import random
import shutil
import smtplib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from mailsupport.app import App, open_app
from mailsupport.config import Config, build_config
from mailsupport.core.message import Address
from mailsupport.core.outmail import OutgoingMail, build_message, new_message_id, recipients
from mailsupport.core.render import Templates
from mailsupport.core.subject import tagged_subject
from mailsupport.core.verp import bounce_address
from mailsupport.db.models import Outbox, OutboxRecipient, OutboxState, RecipientState
from mailsupport.outbound.outbox import enqueue
from mailsupport.outbound.sender import OutboxSender

from netwait import free_port, wait_for_port

HOST = "127.0.0.1"
SUPPORT_NAME = "ACME Support"
SUPPORT_ADDRESS = "support@example.com"
TAG = "ACME"
# Given in the config, as production should, so that no round generates one mid-measurement
# and the plain loop can sign the same envelope senders.
SECRET = "bench-secret-0123456789abcdef"
PG_ENV = "MAILSUPPORT_TEST_PG_URL"
PG_DATABASE = "mailsupport_bench"

GOAL = 0.8  # ours / plain
ENQUEUE_CHUNK = 500  # rows per enqueueing transaction
START_TIMEOUT = 30.0  # seconds for the sink to accept connections
RELAY_TIMEOUT = 30.0

SUBJECTS = (
    "Printer on floor 3 is jammed",
    "VPN drops every 10 minutes since the update",
    "Invoice 2024-117 shows the wrong VAT rate",
    "Cannot log in to the portal after password reset",
    "Принтер на третьем этаже снова не печатает",
    "Не приходят письма с уведомлениями о заказах",
    "Счёт № 4521: неверная сумма НДС",
    "Re: Fwd: Ноутбук не видит док-станцию",
)
NAMES = ("Carol Smith", "Dave O'Brien", "Мария Иванова", "Пётр Сидоров", "", "Zoë Müller")
NOTICES = ("acknowledgement", "status_open", "status_waiting", "status_resolved")


# --- the mails --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mails:
    """The mails of a run: what ``enqueue`` is given, and the bytes it will store and send."""

    outgoing: tuple[OutgoingMail, ...]
    raw: tuple[bytes, ...]
    envelope_to: tuple[tuple[str, ...], ...]

    @property
    def mean_size(self) -> float:
        return sum(map(len, self.raw)) / len(self.raw)


def _recipients(rng: random.Random, number: int, count: int) -> tuple[Address, ...]:
    return tuple(
        Address(f"customer{number}.{i}@customer{i}.test", rng.choice(NAMES)) for i in range(count)
    )


def make_mail(
    templates: Templates, rng: random.Random, number: int, to_count: int, date: datetime
) -> OutgoingMail:
    """An acknowledgement or status notice as the notifier composes it, in English or Russian."""
    subject = rng.choice(SUBJECTS)
    to = _recipients(rng, number, to_count)
    language = "ru" if any("а" <= ch <= "я" for ch in subject.lower()) else "en"
    context = {
        "ticket": {"number": number, "subject": subject, "status": "open", "priority": "normal"},
        "support_name": SUPPORT_NAME,
        "support_address": SUPPORT_ADDRESS,
        "tag": TAG,
        "contact_name": to[0].name,
    }
    rendered = templates.render(rng.choice(NOTICES), language, context)
    customer_id = f"{number}.{rng.getrandbits(48):x}@mail.customer{number % 7}.test"
    return OutgoingMail(
        from_name=SUPPORT_NAME,
        from_address=SUPPORT_ADDRESS,
        to=to[:1],
        cc=to[1:],
        subject=tagged_subject(TAG, number, rendered.subject),
        text=rendered.text,
        html=rendered.html,
        message_id=new_message_id("example.com"),
        in_reply_to=customer_id,
        references=(customer_id,),
        reply_to=Address(SUPPORT_ADDRESS, SUPPORT_NAME),
        date=date,
    )


def make_mails(count: int, to_count: int, seed: int) -> Mails:
    rng = random.Random(seed)
    templates = Templates()
    date = datetime.now(UTC).replace(microsecond=0)
    outgoing = tuple(make_mail(templates, rng, n, to_count, date) for n in range(1, count + 1))
    return Mails(
        outgoing,
        tuple(build_message(m) for m in outgoing),
        tuple(recipients(m) for m in outgoing),
    )


# --- the sink ---------------------------------------------------------------------------------


class NullHandler:
    """Accepts every mail and keeps nothing but a count, to check that all of them arrived."""

    def __init__(self, delivered: Any) -> None:
        self.delivered = delivered

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.delivered.get_lock():
            self.delivered.value += 1
        return "250 OK"


def _sink_main(port: int, delivered: Any) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.new_event_loop()

    def protocol() -> SMTP:
        return SMTP(NullHandler(delivered), hostname="relay.example", ident="sink", loop=loop)

    loop.run_until_complete(loop.create_server(protocol, host=HOST, port=port))
    loop.run_forever()


@dataclass(frozen=True)
class Sink:
    port: int
    delivered: Any  # a multiprocessing Value shared with the sink process

    def count(self) -> int:
        return int(self.delivered.value)


@contextlib.contextmanager
def sink() -> Iterator[Sink]:
    context = multiprocessing.get_context("spawn")
    port = free_port()
    delivered = context.Value("q", 0)
    process = context.Process(target=_sink_main, args=(port, delivered), daemon=True)
    process.start()
    try:
        wait_for_port(port, process.is_alive, START_TIMEOUT, "bench/outbound.py")
        yield Sink(port, delivered)
    finally:
        process.terminate()
        process.join()


# --- (plain) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    seconds: float
    mails: int

    @property
    def rate(self) -> float:
        return self.mails / self.seconds if self.seconds > 0 else 0.0


def _delivered(name: str, relay: Sink, before: int, expected: int) -> None:
    got = relay.count() - before
    if got != expected:
        sys.exit(f"bench/outbound.py: {name}: the sink got {got} mails, expected {expected}")


def measure_plain(relay: Sink, mails: Mails) -> Timing:
    """The baseline: what any script sending these mails over one connection would do."""
    secret = SECRET.encode()
    senders = [bounce_address(SUPPORT_ADDRESS, n, secret) for n in range(1, len(mails.raw) + 1)]
    jobs = list(zip(senders, mails.envelope_to, mails.raw, strict=True))
    before = relay.count()
    started = time.perf_counter()
    client = smtplib.SMTP(HOST, relay.port, local_hostname="example.com", timeout=RELAY_TIMEOUT)
    for envelope_from, to, raw in jobs:
        client.sendmail(envelope_from, list(to), raw)
    client.quit()
    seconds = time.perf_counter() - started
    _delivered("plain", relay, before, len(jobs))
    return Timing(seconds, len(jobs))


# --- (ours) -----------------------------------------------------------------------------------


def bench_config(database_url: str, relay: Sink) -> Config:
    data = {
        "support": {"name": SUPPORT_NAME, "address": SUPPORT_ADDRESS, "tag": TAG, "secret": SECRET},
        "database": {"url": database_url},
        "relay": {"host": HOST, "port": relay.port, "timeout": RELAY_TIMEOUT},
    }
    return build_config(data, env={})


def fill_outbox(app: App, mails: Mails) -> None:
    """Queue every mail as a pending row, a few hundred per transaction."""
    outgoing = mails.outgoing
    for start in range(0, len(outgoing), ENQUEUE_CHUNK):
        with app.factory.begin() as session:
            now = app.clock.now()
            for mail in outgoing[start : start + ENQUEUE_CHUNK]:
                enqueue(
                    session,
                    app.config,
                    mail,
                    ticket=None,
                    kind="acknowledgement",
                    automatic=True,
                    now=now,
                )


def check_outbox(app: App, mails: Mails) -> None:
    """Every row sent, to every recipient, with the very bytes the plain loop sent."""
    expected = dict(zip((m.message_id for m in mails.outgoing), mails.raw, strict=True))
    with app.factory() as session:
        stored = session.execute(select(Outbox.message_id, Outbox.raw, Outbox.state)).all()
        unsent_recipients = session.scalar(
            select(func.count())
            .select_from(OutboxRecipient)
            .where(OutboxRecipient.state != RecipientState.SENT)
        )
    problems = [
        f"{message_id}: {state}"
        for message_id, raw, state in stored
        if state != OutboxState.SENT or expected.get(message_id) != raw
    ]
    if len(stored) != len(expected) or problems or unsent_recipients:
        sys.exit(
            f"bench/outbound.py: outbox not delivered as expected: {len(stored)} rows, "
            f"{unsent_recipients} recipients unsent; {problems[:5]}"
        )


def send_all(app: App, profiler: cProfile.Profile | None) -> float:
    """Seconds for the sender to empty the outbox, sweeping as the scheduler would."""
    sender = OutboxSender(app.factory, app.config, app.clock)
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    while sender.send_due():
        pass
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
    return seconds


def measure_ours(
    database_url: str, relay: Sink, mails: Mails, profiler: cProfile.Profile | None = None
) -> Timing:
    app = open_app(bench_config(database_url, relay), migrate=True)
    try:
        fill_outbox(app, mails)
        before = relay.count()
        seconds = send_all(app, profiler)
        _delivered("ours", relay, before, len(mails.raw))
        check_outbox(app, mails)
    finally:
        app.close()
    return Timing(seconds, len(mails.raw))


def measure_sqlite(
    relay: Sink, mails: Mails, directory: Path, profiler: cProfile.Profile | None
) -> Timing:
    directory.mkdir(parents=True)
    return measure_ours(f"sqlite:///{directory / 'mailsupport.db'}", relay, mails, profiler)


# --- PostgreSQL: a database of its own --------------------------------------------------------


def _admin(url: str, *statements: str) -> None:
    # CREATE and DROP DATABASE cannot run inside a transaction.
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@contextlib.contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty database beside the one named by ``admin_url``, dropped afterwards.

    The tests use the public schema of that database, so nothing here touches it.
    """
    drop = f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"
    _admin(admin_url, drop, f"CREATE DATABASE {PG_DATABASE}")
    try:
        yield make_url(admin_url).set(database=PG_DATABASE).render_as_string(hide_password=False)
    finally:
        _admin(admin_url, drop)


def pg_usable(admin_url: str | None) -> str | None:
    """The admin URL when a bench database can be made there; else None, with the reason."""
    if not admin_url:
        return None
    try:
        with pg_database(admin_url):
            return admin_url
    except Exception as exc:
        # Any failure (driver missing, server down, no CREATEDB right) only skips PostgreSQL.
        print(f"  PostgreSQL skipped: {type(exc).__name__}: {exc}".splitlines()[0])
        return None


def measure_pg(relay: Sink, mails: Mails, admin_url: str) -> Timing:
    with pg_database(admin_url) as url:
        return measure_ours(url, relay, mails)


# --- rounds and report ------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    count: int
    rounds: int
    recipients: int
    seed: int
    pg_url: str | None
    profile: Path | None


@dataclass(frozen=True)
class Round:
    plain: Timing
    sqlite: Timing
    pg: Timing | None


def run_round(
    number: int, relay: Sink, mails: Mails, options: Options, workdir: Path
) -> tuple[Round, cProfile.Profile | None]:
    profiler = cProfile.Profile() if options.profile and number == 1 else None
    # Which goes first alternates, so a machine warming up or slowing down favours neither.
    if number % 2:
        plain = measure_plain(relay, mails)
        sqlite = measure_sqlite(relay, mails, workdir / f"round{number}", profiler)
    else:
        sqlite = measure_sqlite(relay, mails, workdir / f"round{number}", profiler)
        plain = measure_plain(relay, mails)
    pg = measure_pg(relay, mails, options.pg_url) if options.pg_url else None
    result = Round(plain, sqlite, pg)
    print_round(number, result)
    return result, profiler


def _ratio(ours: Timing, plain: Timing) -> float:
    return ours.rate / plain.rate


def print_round(number: int, result: Round) -> None:
    line = (
        f"  round {number}: plain {result.plain.rate:7.1f}/s"
        f"  ours (SQLite) {result.sqlite.rate:7.1f}/s = {_ratio(result.sqlite, result.plain):.2f}x"
    )
    if result.pg is not None:
        pg_ratio = _ratio(result.pg, result.plain)
        line += f"  ours (PostgreSQL) {result.pg.rate:7.1f}/s = {pg_ratio:.2f}x"
    print(line, flush=True)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def report(rounds: Sequence[Round], mails: Mails, options: Options) -> None:
    median = statistics.median
    plain = median(r.plain.rate for r in rounds)
    sqlite = median(r.sqlite.rate for r in rounds)
    ratio = median(_ratio(r.sqlite, r.plain) for r in rounds)
    print()
    print(
        f"{len(mails.raw)} mails (mean {mails.mean_size / 1024:.1f} KB), {options.recipients}"
        f" recipient(s) each, median of {len(rounds)} round(s), {os.cpu_count()} CPUs"
    )
    print(f"  plain smtplib loop          {plain:8.1f} mails/s")
    print(f"  ours, SQLite                {sqlite:8.1f} mails/s   {ratio:5.2f} x plain")
    pg_rounds = [r.pg for r in rounds if r.pg is not None]
    if pg_rounds:
        pg = median(t.rate for t in pg_rounds)
        pg_ratio = median(_ratio(t, r.plain) for t, r in zip(pg_rounds, rounds, strict=True))
        print(f"  ours, PostgreSQL            {pg:8.1f} mails/s   {pg_ratio:5.2f} x plain")
    print(f"  goal ours (SQLite) >= {GOAL:.1f} x plain: {_verdict(ratio >= GOAL)}")


def save_profile(profiler: cProfile.Profile, path: Path) -> None:
    profiler.dump_stats(str(path))
    print(f"profile of round 1 (ours, SQLite) written to {path}")
    print(f"  read it with: python -m pstats {path}  (then: sort cumtime, stats 30)")


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="mails per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="repeat each measurement")
    parser.add_argument("--recipients", type=int, default=1, help="envelope recipients per mail")
    parser.add_argument("--seed", type=int, default=1, help="seed for the mails' content")
    parser.add_argument("--no-pg", action="store_true", help=f"ignore {PG_ENV}")
    parser.add_argument("--profile", type=Path, help="cProfile the sender in round 1 into FILE")
    args = parser.parse_args(argv)
    if args.count < 1 or args.rounds < 1 or args.recipients < 1:
        parser.error("--count, --rounds and --recipients must be positive")
    pg_url = None if args.no_pg else os.environ.get(PG_ENV)
    return Options(args.count, args.rounds, args.recipients, args.seed, pg_url, args.profile)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    mails = make_mails(options.count, options.recipients, options.seed)
    options = replace(options, pg_url=pg_usable(options.pg_url))
    workdir = Path(tempfile.mkdtemp(prefix="mailsupport-bench-outbound-"))
    try:
        with sink() as relay:
            results = [
                run_round(n, relay, mails, options, workdir) for n in range(1, options.rounds + 1)
            ]
        report([r for r, _ in results], mails, options)
        profiler = results[0][1]
        if profiler is not None and options.profile is not None:
            save_profile(profiler, options.profile)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
