"""Intake throughput: a do-nothing aiosmtpd baseline, our listener, and mail → ticket end to end.

usage: python bench/intake.py [--count N] [--clients 8] [--corpus DIR] [--seed 1] [--rounds 3]
                              [--keep] [--client-processes]

The corpus comes from ``../shared/bench/gen_corpus.py`` (same seed, same mails), and every
figure is measured in this run against a baseline measured the same way, because the machines
this runs on are noisy and absolute figures from elsewhere do not compare.

(a) a do-nothing aiosmtpd handler, served in its own process on its own asyncio loop;
(b) ``mailsupport serve`` with no pipeline worker: 250 only after the durable commit;
(c) ``mailsupport serve`` with its default worker, once the worker has said it is ready: from
    the first mail sent until every stored mail has been turned into a ticket, a follow-up or
    a quarantine entry (the acknowledgements it sends go to a do-nothing relay). The CPU each
    process spent in that time is printed per mail, and the peak memory of each at the end.

The databases go in the temporary directory (TMPDIR): on a tmpfs the disk flush behind every
250 costs nothing, and (b) and (c) look better than they would on a disk.

The same client harness sends the corpus in all three. Goals on a 2-core machine:
(b) >= 0.8 x (a) and (c) >= 250 mails/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import queue
import re
import shutil
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from netwait import free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent
GEN_CORPUS = REPO.parent / "shared" / "bench" / "gen_corpus.py"
SUPPORT_ADDRESS = "support@support.example"
TAG = "Support"
HOST = "127.0.0.1"

AB_GOAL = 0.8  # (b) / (a)
E2E_GOAL = 250.0  # mails/s for (c)
START_TIMEOUT = 60.0  # seconds for a server to accept connections
POLL_INTERVAL = 0.02  # seconds between database checks while waiting for the pipeline
CLIENT_TIMEOUT = 120.0  # seconds a client waits for any one reply


@dataclass(frozen=True)
class Options:
    count: int
    clients: int
    corpus: Path | None
    seed: int
    rounds: int
    keep: bool
    client_processes: bool


@dataclass(frozen=True)
class Share:
    """One client's part of a run, timed with the system-wide monotonic clock."""

    sent: int
    failed: int
    started: float
    finished: float
    error: str = ""  # why the client gave up, if it did


@dataclass(frozen=True)
class SendResult:
    sent: int  # answered 250
    failed: int  # refused or lost: any of these makes the run suspect
    started: float  # time.monotonic() when the first client started sending
    finished: float  # when the last client had its last reply
    errors: tuple[str, ...] = ()  # why clients gave up, if any did

    @property
    def rate(self) -> float:
        elapsed = self.finished - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class Processing:
    """What the pipeline made of one end-to-end run."""

    seconds: float  # first mail sent until the last stored mail was processed
    processed: int
    tickets: int
    follow_ups: int
    quarantined: int
    no_ticket: int

    @property
    def rate(self) -> float:
        return self.processed / self.seconds


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds each process spent during (c), read from /proc (Linux only)."""

    workers: float  # the daemon's pipeline worker processes
    daemon: float  # listener, inbox writer and outbox sender
    relay: float  # the do-nothing relay taking the acknowledgements

    def since(self, earlier: CpuUse) -> CpuUse:
        """What was spent after ``earlier`` (start-up left out)."""
        return CpuUse(
            self.workers - earlier.workers, self.daemon - earlier.daemon, self.relay - earlier.relay
        )

    def per_mail(self, mails: int) -> tuple[float, float, float]:
        """Milliseconds of CPU per mail processed."""
        return (1000 * self.workers / mails, 1000 * self.daemon / mails, 1000 * self.relay / mails)


@dataclass(frozen=True)
class PeakMemory:
    """Peak resident memory at the end of (c) in MB, read from /proc (Linux only)."""

    worker: float  # the largest of the daemon's pipeline worker processes
    daemon: float  # listener, inbox writer and outbox sender


@dataclass(frozen=True)
class Served:
    port: int
    pid: int


@dataclass(frozen=True)
class Round:
    baseline: SendResult
    accept: SendResult
    e2e_send: SendResult
    e2e: Processing
    e2e_cpu: CpuUse | None
    e2e_memory: PeakMemory | None


# --- corpus -----------------------------------------------------------------------------------


def build_corpus(options: Options, workdir: Path) -> Path:
    """The corpus directory: the one given, or a fresh one from gen_corpus.py."""
    if options.corpus is not None and any(options.corpus.glob("*.eml")):
        return options.corpus
    if not GEN_CORPUS.is_file():
        sys.exit(f"bench/intake.py: {GEN_CORPUS} not found; it needs the shared bench folder.")
    target = options.corpus or workdir / "corpus"
    command = [sys.executable, str(GEN_CORPUS), str(options.count), str(target)]
    subprocess.run([*command, "--seed", str(options.seed), "--no-mbox"], check=True)
    return target


def corpus_files(corpus: Path, count: int) -> list[Path]:
    files = sorted(corpus.glob("*.eml"))[:count]
    if not files:
        sys.exit(f"bench/intake.py: no .eml files in {corpus}")
    return files


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")  # the same dot-stuffing as smtplib's data()


@dataclass(frozen=True)
class Wire:
    """A corpus mail as the clients send it."""

    sender: str  # MAIL FROM: the From address, as an MTA relaying the mail would use
    data: bytes  # the DATA section: dot-stuffed, ending in CRLF . CRLF


def to_wire(raw: bytes) -> Wire:
    # smtplib's data() dot-stuffs the whole message with a multi-line regex on every send, a
    # third of a millisecond of client CPU per mail on this corpus. Done once while loading,
    # the bytes on the wire are the same and the clients take less CPU from the servers.
    header = BytesHeaderParser().parsebytes(_HEADER_END.split(raw, maxsplit=1)[0])
    data = _LEADING_DOT.sub(b"..", as_sent(raw)) + b".\r\n"
    return Wire(parseaddr(str(header.get("From", "")))[1], data)


def as_sent(raw: bytes) -> bytes:
    """The message as the server gets it: SMTP ends its last line with CRLF."""
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


# --- the client harness -----------------------------------------------------------------------
#
# The clients never run in a server's interpreter, so their CPU never takes the server's GIL.
# They are threads of one process by default, not one process each. Measured on the 2-core
# machine, both ways against (a) and (b) alike: the threads used about 0.24 ms of CPU per mail
# between them, eight processes about 0.35 ms, and no server was faster with processes
# (within the noise of the machine). The threads spend their time waiting for replies, which
# releases the GIL, so one process is no bottleneck; and it can never take more than one core
# from the server being measured, which eight processes can. ``--client-processes`` runs the
# other way, to check this again.


def _send(client: smtplib.SMTP, wire: Wire) -> None:
    """One SMTP transaction, as smtplib's sendmail() makes it; raises when refused."""
    code, reply = client.mail(wire.sender)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, wire.sender)
    code, reply = client.rcpt(SUPPORT_ADDRESS)
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({SUPPORT_ADDRESS: (code, reply)})
    code, reply = client.docmd("DATA")
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    client.send(wire.data)
    code, reply = client.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


def _connect(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP(HOST, port, timeout=CLIENT_TIMEOUT)
    client.ehlo("bench.example")
    return client


def _reset(client: smtplib.SMTP, port: int) -> smtplib.SMTP:
    """After a refusal: RSET, or a new connection when the server hung up."""
    try:
        client.rset()
    except (smtplib.SMTPServerDisconnected, OSError):
        return _connect(port)
    return client


def _send_all(port: int, mails: Sequence[Wire], barrier: Any) -> Share:
    client = _connect(port)
    sent = failed = 0
    barrier.wait()
    started = time.monotonic()
    for wire in mails:
        try:
            _send(client, wire)
            sent += 1
        except (smtplib.SMTPServerDisconnected, OSError):
            failed += 1
            client = _connect(port)
        except smtplib.SMTPException:
            failed += 1
            client = _reset(client, port)
    finished = time.monotonic()
    with contextlib.suppress(smtplib.SMTPException, OSError):
        client.quit()
    return Share(sent, failed, started, finished)


def _client(port: int, paths: Sequence[str], barrier: Any, results: Any) -> None:
    """One SMTP client: read its share, connect, wait for the others, send it all."""
    try:
        mails = [to_wire(Path(p).read_bytes()) for p in paths]
        share = _send_all(port, mails, barrier)
    except Exception as exc:
        # Always an answer, so the coordinator never waits for a client that is gone; the
        # others are released from the barrier and report their own failure.
        barrier.abort()
        now = time.monotonic()
        share = Share(0, len(paths), now, now, error=f"{type(exc).__name__}: {exc}")
    results.put(share)


def _shares(paths: Sequence[str], clients: int) -> list[list[str]]:
    # Round robin keeps the arrival order close to the corpus order, so replies mostly arrive
    # after the mail they answer, as they would in life.
    return [list(paths[i::clients]) for i in range(clients)]


def _combine(shares: Sequence[Share]) -> SendResult:
    return SendResult(
        sent=sum(s.sent for s in shares),
        failed=sum(s.failed for s in shares),
        started=min(s.started for s in shares),
        finished=max(s.finished for s in shares),
        errors=tuple(s.error for s in shares if s.error),
    )


def _threaded_clients(port: int, paths: list[str], clients: int, out: Any) -> None:
    """Process body for the default harness: all clients as threads of this process."""
    barrier = threading.Barrier(clients)
    threads = [
        threading.Thread(target=_client, args=(port, share, barrier, out))
        for share in _shares(paths, clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _collect(out: Any, processes: Sequence[Any], count: int) -> list[Share]:
    shares: list[Share] = []
    while len(shares) < count:
        try:
            shares.append(out.get(timeout=1.0))
        except queue.Empty:
            if not any(p.is_alive() for p in processes):
                sys.exit("bench/intake.py: the SMTP clients exited without reporting")
    return shares


def send_corpus(port: int, files: Sequence[Path], options: Options) -> SendResult:
    """Send every file once through ``options.clients`` connections; returns when all are done."""
    context = multiprocessing.get_context("spawn")
    paths = [str(f) for f in files]
    out = context.Queue()
    if options.client_processes:
        barrier = context.Barrier(options.clients)
        processes = [
            context.Process(target=_client, args=(port, share, barrier, out))
            for share in _shares(paths, options.clients)
        ]
    else:
        processes = [
            context.Process(target=_threaded_clients, args=(port, paths, options.clients, out))
        ]
    for process in processes:
        process.start()
    shares = _collect(out, processes, options.clients)
    for process in processes:
        process.join()
    return _combine(shares)


# --- (a) the do-nothing server ----------------------------------------------------------------


class NullHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _null_server_main(port: int) -> None:
    """Serve stock aiosmtpd with a handler that stores nothing, on a loop of its own.

    It gets the settings our listener gives aiosmtpd (line length limit, size limit, SMTPUTF8),
    since the reader's limit changes how the stream is buffered. It keeps aiosmtpd's own DATA
    reading, line by line: (a) is what receiving mail costs with aiosmtpd as it comes, and our
    listener, which reads DATA in blocks, can get close to it or past it while storing.
    """
    from aiosmtpd.smtp import SMTP

    from mailsupport.intake.smtp import LONG_LINE_LIMIT

    class _SMTP(SMTP):
        line_length_limit = LONG_LINE_LIMIT

    loop = asyncio.new_event_loop()

    def protocol() -> Any:
        return _SMTP(
            NullHandler(),
            data_size_limit=26_214_400,
            hostname="support.example",
            ident="null",
            enable_SMTPUTF8=True,
            loop=loop,
        )

    loop.run_until_complete(loop.create_server(protocol, host=HOST, port=port))
    loop.run_forever()


@contextlib.contextmanager
def null_server() -> Iterator[Served]:
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=_null_server_main, args=(port,))
    process.start()
    try:
        wait_for_port(port, process.is_alive, START_TIMEOUT, "bench/intake.py")
        assert process.pid is not None
        yield Served(port, process.pid)
    finally:
        process.terminate()
        process.join()


# --- (b) and (c): mailsupport serve -----------------------------------------------------------


def write_config(directory: Path, port: int, workers: int, relay: int) -> Path:
    path = directory / "mailsupport.toml"
    path.write_text(
        f'[support]\naddress = "{SUPPORT_ADDRESS}"\ntag = "{TAG}"\n\n'
        f'[database]\nurl = "sqlite:///{directory / "mailsupport.db"}"\n\n'
        f'[smtp]\nhost = "{HOST}"\nport = {port}\n\n'
        f'[relay]\nhost = "{HOST}"\nport = {relay}\n\n'
        f"[pipeline]\nworkers = {workers}\n"
    )
    return path


@contextlib.contextmanager
def daemon(directory: Path, workers: int, relay: int | None = None) -> Iterator[Served]:
    """``mailsupport serve`` in a process of its own, with a fresh database in ``directory``.

    Its outbound mail goes to ``relay``; without one, to a port nothing listens on, so that
    a bench never hands mail to a real MTA on port 25.
    """
    directory.mkdir(parents=True)
    port = free_port()
    config = write_config(directory, port, workers, relay or free_port())
    command = [sys.executable, "-m", "mailsupport", "-c", str(config), "serve"]
    with (directory / "serve.log").open("wb") as log:
        # Its log goes to a file: a pipe nobody reads would fill up and stall the daemon.
        process = subprocess.Popen(command, stdout=log, stderr=log, cwd=REPO)
        try:
            wait_for_port(port, lambda: process.poll() is None, START_TIMEOUT, "bench/intake.py")
            _wait_for_workers(directory / "serve.log", workers, process)
            yield Served(port, process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)


_READY = re.compile(rb"pipeline worker \d+ of \d+ ready")


def _wait_for_workers(log: Path, workers: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until each pipeline worker has said it is ready.

    The listener answers about a second before a worker process has started (a new
    interpreter importing everything); mail sent in that second would charge the start-up to
    the sustained rate that (c) measures.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while len(_READY.findall(log.read_bytes())) < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"bench/intake.py: the pipeline workers did not start; see {log}")
        time.sleep(POLL_INTERVAL)


def _count(db: sqlite3.Connection, sql: str) -> int:
    return int(db.execute(sql).fetchone()[0])


def wait_processed(database: Path, expected: int, started: float) -> Processing:
    """Poll the database, read-only, until ``expected`` stored mails are no longer pending."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        deadline = time.monotonic() + max(120.0, expected / 5)
        done_sql = "SELECT count(*) FROM inbound WHERE state != 'pending'"
        while _count(db, done_sql) < expected:
            if time.monotonic() > deadline:
                sys.exit(f"bench/intake.py: the pipeline did not finish; see {database.parent}")
            time.sleep(POLL_INTERVAL)
        seconds = time.monotonic() - started
        return _processing(db, seconds)
    finally:
        db.close()


def _processing(db: sqlite3.Connection, seconds: float) -> Processing:
    tickets = _count(db, "SELECT count(*) FROM tickets")
    attached = _count(db, "SELECT count(*) FROM messages WHERE inbound_id IS NOT NULL")
    processed = _count(db, "SELECT count(*) FROM inbound WHERE state != 'pending'")
    quarantined = _count(db, "SELECT count(*) FROM inbound WHERE state = 'quarantined'")
    return Processing(
        seconds=seconds,
        processed=processed,
        tickets=tickets,
        follow_ups=attached - tickets,
        quarantined=quarantined,
        no_ticket=processed - quarantined - attached,
    )


# --- the measurements -------------------------------------------------------------------------


def _check(name: str, result: SendResult, expected: int) -> SendResult:
    if result.failed or result.sent != expected:
        print(f"  warning: {name}: {result.sent} accepted, {result.failed} refused or lost")
    for error in sorted(set(result.errors)):
        print(f"  warning: {name}: a client gave up: {error}")
    return result


def measure_baseline(files: Sequence[Path], options: Options) -> SendResult:
    with null_server() as server:
        return _check("(a)", send_corpus(server.port, files, options), len(files))


def measure_accept(files: Sequence[Path], options: Options, directory: Path) -> SendResult:
    with daemon(directory, workers=0) as served:
        result = _check("(b)", send_corpus(served.port, files, options), len(files))
    for problem in verify_stored(directory / "mailsupport.db", files):
        print(f"  warning: (b): {problem}")
    return result


def verify_stored(database: Path, files: Sequence[Path]) -> list[str]:
    """What is wrong with what (b) stored; every mail should be there once, byte for byte."""
    sent = {_digest(as_sent(f.read_bytes())) for f in files}
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        stored = [_digest(raw) for (raw,) in db.execute("SELECT raw FROM inbound_raw")]
    finally:
        db.close()
    problems = []
    if len(stored) != len(set(stored)):
        problems.append(f"{len(stored) - len(set(stored))} mail(s) stored twice")
    if sent - set(stored):
        problems.append(f"{len(sent - set(stored))} mail(s) accepted but not stored as sent")
    return problems


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def measure_e2e(
    files: Sequence[Path], options: Options, directory: Path
) -> tuple[SendResult, Processing, CpuUse | None, PeakMemory | None]:
    # The acknowledgements the pipeline queues are really sent, to a do-nothing relay, so the
    # daemon does all it would do in service.
    with null_server() as relay, daemon(directory, workers=1, relay=relay.port) as served:
        before = cpu_use(served.pid, relay.pid)
        sent = _check("(c)", send_corpus(served.port, files, options), len(files))
        processing = wait_processed(directory / "mailsupport.db", sent.sent, sent.started)
        after = cpu_use(served.pid, relay.pid)
        spent = None if before is None or after is None else after.since(before)
        return sent, processing, spent, peak_memory(served.pid)


def cpu_use(daemon_pid: int, relay_pid: int) -> CpuUse | None:
    """Where the CPU went in (c): what bounds the rate, when it is bound by CPU."""
    try:
        workers = sum(_cpu_seconds(pid) for pid in _children(daemon_pid))
        return CpuUse(workers, _cpu_seconds(daemon_pid), _cpu_seconds(relay_pid))
    except (OSError, ValueError, IndexError):
        return None  # no /proc: not Linux


def peak_memory(daemon_pid: int) -> PeakMemory | None:
    """How much memory the daemon's processes have held at most, start-up included."""
    try:
        worker = max((_peak_mb(pid) for pid in _children(daemon_pid)), default=0.0)
        return PeakMemory(worker, _peak_mb(daemon_pid))
    except (OSError, ValueError):
        return None  # no /proc: not Linux


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise ValueError(f"no VmHWM for process {pid}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def run_round(number: int, files: Sequence[Path], options: Options, workdir: Path) -> Round:
    baseline = measure_baseline(files, options)
    print(f"  round {number}: (a) {baseline.rate:7.1f} mails/s", flush=True)
    accept = measure_accept(files, options, workdir / f"round{number}-b")
    print(f"  round {number}: (b) {accept.rate:7.1f} mails/s", flush=True)
    e2e_send, e2e, cpu, memory = measure_e2e(files, options, workdir / f"round{number}-c")
    print(
        f"  round {number}: (c) {e2e.rate:7.1f} mails/s end to end"
        f" (accepted at {e2e_send.rate:.1f}/s; {e2e.tickets} tickets, {e2e.follow_ups}"
        f" follow-ups, {e2e.no_ticket} without ticket, {e2e.quarantined} quarantined)",
        flush=True,
    )
    if cpu is not None:
        workers, daemon_ms, relay = cpu.per_mail(e2e.processed)
        print(
            f"           CPU per mail: pipeline worker {workers:.2f} ms, daemon {daemon_ms:.2f} ms"
            f" (listener, writer, outbox sender), relay {relay:.2f} ms",
            flush=True,
        )
    if memory is not None:
        print(
            f"           peak memory: pipeline worker {memory.worker:.0f} MB,"
            f" daemon {memory.daemon:.0f} MB",
            flush=True,
        )
    return Round(baseline, accept, e2e_send, e2e, cpu, memory)


# --- report -----------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _row(label: str, values: Sequence[float], unit: str = "mails/s") -> float:
    median = _median(values)
    digits = {"mails/s": 1, "MB": 0}.get(unit, 2)
    spread = f"{min(values):.{digits}f} to {max(values):.{digits}f}" if len(values) > 1 else ""
    print(f"  {label:<40}{median:8.{digits}f} {unit:<8} {spread}")
    return median


def report(rounds: Sequence[Round], files: Sequence[Path], options: Options) -> None:
    size = sum(f.stat().st_size for f in files) / len(files) / 1024
    mode = "processes" if options.client_processes else "threads of one process"
    print()
    print(
        f"{len(files)} mails (mean {size:.0f} KB), {options.clients} clients ({mode}),"
        f" median of {len(rounds)} round(s), {os.cpu_count()} CPUs"
    )
    print(f"  {'':<40}{'median':>8} {'':<8} range")
    _row("(a) do-nothing aiosmtpd handler", [r.baseline.rate for r in rounds])
    _row("(b) mailsupport acceptance (workers=0)", [r.accept.rate for r in rounds])
    c = _row("(c) end to end, mail -> ticket", [r.e2e.rate for r in rounds])
    _row("    acceptance during (c)", [r.e2e_send.rate for r in rounds])
    cpu = [r.e2e_cpu.per_mail(r.e2e.processed) for r in rounds if r.e2e_cpu is not None]
    if cpu:
        _row("    CPU per mail: pipeline worker", [c[0] for c in cpu], "ms")
        _row("    CPU per mail: daemon", [c[1] for c in cpu], "ms")
    memory = [r.e2e_memory for r in rounds if r.e2e_memory is not None]
    if memory:
        _row("    peak memory: pipeline worker", [m.worker for m in memory], "MB")
        _row("    peak memory: daemon", [m.daemon for m in memory], "MB")
    # Each round's (a) and (b) ran back to back, so their ratio shares that round's noise.
    ratio = _row("(b)/(a), per round", [r.accept.rate / r.baseline.rate for r in rounds], "")
    print(f"  goal (b) >= {AB_GOAL:.1f} x (a):   {_verdict(ratio >= AB_GOAL)}")
    print(f"  goal (c) >= {E2E_GOAL:.0f} mails/s: {_verdict(c >= E2E_GOAL)}")


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="mails in the corpus")
    parser.add_argument("--clients", type=int, default=8, help="concurrent SMTP clients")
    parser.add_argument("--corpus", type=Path, help="reuse (or create) the corpus here")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed")
    parser.add_argument("--rounds", type=int, default=3, help="repeat each measurement")
    parser.add_argument("--keep", action="store_true", help="keep the databases and logs")
    parser.add_argument(
        "--client-processes", action="store_true", help="one process per client, not threads"
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.clients < 1 or args.rounds < 1:
        parser.error("--count, --clients and --rounds must be positive")
    return Options(
        count=args.count,
        clients=args.clients,
        corpus=args.corpus,
        seed=args.seed,
        rounds=args.rounds,
        keep=args.keep,
        client_processes=args.client_processes,
    )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mailsupport-bench-"))
    try:
        files = corpus_files(build_corpus(options, workdir), options.count)
        rounds = [run_round(n, files, options, workdir) for n in range(1, options.rounds + 1)]
        report(rounds, files, options)
    finally:
        if options.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
