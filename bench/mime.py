"""Memory, CPU and listener stalls per shape of mail, each near 9 MB.

usage: python bench/mime.py [--size 9000000] [--shape NAME ...] [--keep]

Each shape of mail is sent once to a fresh ``mailsupport serve`` (one pipeline worker), and
taken until the worker has made a ticket of it (or quarantined it). Printed per shape:

- the daemon's (listener, writer) and the worker's peak memory above what each held before
  the mail came, as a multiple of the mail's size, and the CPU each spent on it;
- the longest a NOOP took on another connection while the mail was sent, stored and
  processed: how long the listener's event loop answered nobody.

Goals: the daemon under 4 x the mail's size, the worker under 10 x, no NOOP over 100 ms. Also
four mails of short lines are sent at once, to see the loop's stall with several big mails.
Linux only (the figures come from /proc).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import shutil
import smtplib
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from intake import HOST, SUPPORT_ADDRESS, Served, _children, _cpu_seconds, daemon

DAEMON_GOAL = 4.0  # peak memory above the idle daemon, in mail sizes
WORKER_GOAL = 10.0  # the same for the pipeline worker
STALL_GOAL = 0.100  # seconds of the longest NOOP round trip
PROCESS_TIMEOUT = 300.0  # seconds the worker may take over one mail before the bench gives up


# --- the shapes -------------------------------------------------------------------------------

_HEAD = (
    "From: Carol <carol@customer.test>\r\nTo: {to}\r\nSubject: {name}\r\n"
    "Date: Mon, 2 Mar 2026 09:00:00 +0000\r\nMessage-ID: <{name}.{n}@customer.test>\r\n"
    "MIME-Version: 1.0\r\n"
)


def _head(name: str, n: int, extra: str) -> bytes:
    return (_HEAD.format(to=SUPPORT_ADDRESS, name=name, n=n) + extra).encode()


def _repeat(unit: bytes, size: int) -> bytes:
    return unit * max(1, size // len(unit))


def short_lines(size: int) -> bytes:
    return _head("short_lines", 0, "Content-Type: text/plain\r\n\r\n") + _repeat(b"x\r\n", size)


def long_lines(size: int) -> bytes:
    line = b"y" * 1_000_000 + b"\r\n"  # just under the longest line the listener takes
    return _head("long_lines", 0, "Content-Type: text/plain\r\n\r\n") + _repeat(line, size)


def deep_nesting(size: int) -> bytes:
    depth = 2000  # past what the parser accepts: the mail is quarantined, not a crash
    parts = [_head("deep_nesting", 0, 'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n')]
    for level in range(1, depth):
        parts.append(
            b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (level - 1, level)
        )
    parts.append(b"--b%d\r\nContent-Type: text/plain\r\n\r\n" % (depth - 1))
    parts.append(_repeat(b"z" * 70 + b"\r\n", size - sum(map(len, parts)) - 10 * depth))
    parts += [b"--b%d--\r\n" % level for level in reversed(range(depth))]
    return b"".join(parts)


def many_parts(size: int) -> bytes:
    head = _head("many_parts", 0, 'Content-Type: multipart/mixed; boundary="p"\r\n\r\n')
    part = b"--p\r\nContent-Type: text/plain\r\n\r\nhello part\r\n"
    return head + _repeat(part, size) + b"--p--\r\n"


def many_headers(size: int) -> bytes:
    header = b"X-Filler: some header value that repeats\r\n"
    return _head("many_headers", 0, "") + _repeat(header, size) + b"\r\nbody\r\n"


def folded_header(size: int) -> bytes:
    folded = b"X-Folded: start\r\n" + _repeat(b" x\r\n", size)
    return _head("folded_header", 0, "") + folded + b"\r\nbody\r\n"


def base64_attachment(size: int) -> bytes:
    data = random.Random(1).randbytes(size * 3 // 4)
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    head = _head("base64_attachment", 0, 'Content-Type: multipart/mixed; boundary="a"\r\n\r\n')
    text = b"--a\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
    attached = (
        b"--a\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="f.bin"\r\n\r\n'
    )
    return head + text + attached + encoded + b"--a--\r\n"


def quoted_printable(size: int) -> bytes:
    rng = random.Random(2)
    words = ["привет", "мир", "support", "ticket", "=", "\t", "ünïcödé"]
    lines, length = [], 0
    while length < size:
        line = "".join(rng.choice(words) + " " for _ in range(12)).encode()
        encoded = b"".join(b"=%02X" % c if c > 126 or c == 61 else bytes([c]) for c in line)
        lines.append(encoded[:72] + b"=\r\n" + encoded[72:] + b"\r\n")
        length += len(lines[-1])
    head = _head(
        "quoted_printable",
        0,
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        "\r\n\r\n",
    )
    return head + b"".join(lines)


def big_html(size: int) -> bytes:
    row = b"<tr><td>cell</td><td>value</td></tr>\r\n"
    head = _head("big_html", 0, "Content-Type: text/html\r\n\r\n<html><body><table>\r\n")
    return head + _repeat(row, size) + b"</table></body></html>\r\n"


SHAPES: dict[str, Callable[[int], bytes]] = {
    shape.__name__: shape
    for shape in (
        short_lines,
        long_lines,
        deep_nesting,
        many_parts,
        many_headers,
        folded_header,
        base64_attachment,
        quoted_printable,
        big_html,
    )
}


# --- measuring --------------------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {field} for process {pid}")


def _reset_peak(pid: int) -> None:
    """Start VmHWM again from the current size (Linux 4.0 and later)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Process:
    """One process's memory and CPU around the mail."""

    pid: int
    rss_before: int = 0  # kB
    cpu_before: float = 0.0

    def start(self) -> None:
        _reset_peak(self.pid)
        self.rss_before = _status_kb(self.pid, "VmRSS")
        self.cpu_before = _cpu_seconds(self.pid)

    def growth_mb(self) -> float:
        return (_status_kb(self.pid, "VmHWM") - self.rss_before) / 1024

    def cpu(self) -> float:
        return _cpu_seconds(self.pid) - self.cpu_before


class StallProbe:
    """NOOPs on a connection of their own, one after another; the longest round trip."""

    def __init__(self, port: int) -> None:
        self._client = smtplib.SMTP(HOST, port, timeout=60)
        self._stop = threading.Event()
        self.longest = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self._client.quit()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            started = time.monotonic()
            self._client.noop()
            self.longest = max(self.longest, time.monotonic() - started)


@dataclass(frozen=True)
class Result:
    shape: str
    size: int
    daemon_mb: float
    daemon_cpu: float
    worker_mb: float
    worker_cpu: float
    stall: float
    outcome: str


def _send(port: int, raw: bytes) -> None:
    with smtplib.SMTP(HOST, port, timeout=300) as client:
        client.sendmail("carol@customer.test", [SUPPORT_ADDRESS], raw)


def _wait_processed(database: Path, count: int) -> str:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while time.monotonic() < deadline:
            states = [state for (state,) in db.execute("SELECT state FROM inbound")]
            if len(states) >= count and "pending" not in states:
                return ", ".join(sorted(set(states)))
            time.sleep(0.05)
        return "not processed in time"
    finally:
        db.close()


def _worker(served: Served) -> int:
    """The pipeline worker: the daemon's child that has spent the most CPU (not the tracker)."""
    return max(_children(served.pid), key=_cpu_seconds)


def measure(name: str, mails: Sequence[bytes], workdir: Path) -> Result:
    directory = workdir / name
    with daemon(directory, workers=1) as served:
        processes = [Process(served.pid), Process(_worker(served))]
        for process in processes:
            process.start()
        with StallProbe(served.port) as probe:
            senders = [threading.Thread(target=_send, args=(served.port, raw)) for raw in mails]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            outcome = _wait_processed(directory / "mailsupport.db", len(mails))
        listener, worker = processes
        return Result(
            name,
            sum(map(len, mails)),
            listener.growth_mb(),
            listener.cpu(),
            worker.growth_mb(),
            worker.cpu(),
            probe.longest,
            outcome,
        )


# --- report -----------------------------------------------------------------------------------


def _times(mb: float, size: int) -> float:
    return mb * 1024 * 1024 / size


def report_line(result: Result) -> str:
    daemon_x = _times(result.daemon_mb, result.size)
    worker_x = _times(result.worker_mb, result.size)
    return (
        f"  {result.shape:<22}{result.size / 1e6:5.1f} MB"
        f"  daemon {result.daemon_mb:6.0f} MB {daemon_x:5.1f}x {result.daemon_cpu:6.2f} s"
        f"  worker {result.worker_mb:6.0f} MB {worker_x:5.1f}x {result.worker_cpu:6.2f} s"
        f"  NOOP {1000 * result.stall:6.0f} ms  {result.outcome}"
    )


def verdicts(results: Sequence[Result]) -> list[str]:
    single = [r for r in results if "x4" not in r.shape]
    daemon_x = max(_times(r.daemon_mb, r.size) for r in single)
    worker_x = max(_times(r.worker_mb, r.size) for r in single)
    stall = max(r.stall for r in results)
    return [
        _goal(f"daemon < {DAEMON_GOAL:.0f}x the mail", daemon_x < DAEMON_GOAL, f"{daemon_x:.1f}x"),
        _goal(f"worker < {WORKER_GOAL:.0f}x the mail", worker_x < WORKER_GOAL, f"{worker_x:.1f}x"),
        _goal(f"NOOP < {1000 * STALL_GOAL:.0f} ms", stall < STALL_GOAL, f"{1000 * stall:.0f} ms"),
    ]


def _goal(goal: str, met: bool, figure: str) -> str:
    return f"  goal {goal}: {'met' if met else 'MISSED'} ({figure})"


def _runs(shapes: Sequence[str], size: int) -> Iterator[tuple[str, list[bytes]]]:
    for name in shapes:
        yield name, [SHAPES[name](size)]
    if "short_lines" in shapes:
        four = [
            short_lines(size).replace(b"short_lines.0@", b"short_lines.%d@" % n) for n in range(4)
        ]
        yield "short_lines x4 at once", four


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=9_000_000, help="bytes per mail")
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="only these")
    parser.add_argument("--keep", action="store_true", help="keep the databases and logs")
    options = parser.parse_args(argv)
    if not Path("/proc/self/status").exists():
        sys.exit("bench/mime.py: needs Linux (/proc)")
    workdir = Path(tempfile.mkdtemp(prefix="mailsupport-mime-"))
    results = []
    try:
        print(f"peak memory above the idle process, CPU, longest NOOP; {os.cpu_count()} CPUs")
        for name, mails in _runs(options.shape or list(SHAPES), options.size):
            results.append(measure(name.replace(" ", "-"), mails, workdir))
            print(report_line(results[-1]).replace(name.replace(" ", "-"), name), flush=True)
        print("\n".join(verdicts(results)))
    finally:
        if options.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
