"""The mail gateway's cost per mail: CPU of one `mailsupport deliver` against `python -c pass`.

usage: python bench/gateway.py [--count 20] [--rounds 3] [--seed 1] [--process]

An MTA's pipe starts `mailsupport deliver` once for every mail, so the CPU one run takes, the
interpreter's start included, bounds how many mails a core can take in. Each round runs
`python -c pass` and the README's pipe command (`mailsupport -c CONFIG deliver --no-process
-f SENDER -r RECIPIENT`) ``--count`` times each, taking turns, one process at a time, with
real mails on standard input (``../shared/bench/gen_corpus.py``, a different one each run, so
none is a duplicate) into a real SQLite database, and prints the user+sys CPU per run of each
(the children's rusage) and the ratio. With ``--process``, also the same command without
``--no-process``, which processes each mail in the gateway too.

The database goes in the temporary directory (TMPDIR); the CPU figures do not depend on how
fast its disk flushes.

Goal: deliver --no-process under 150 ms of CPU per mail.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GEN_CORPUS = REPO.parent / "shared" / "bench" / "gen_corpus.py"
MAILSUPPORT = Path(sys.executable).with_name("mailsupport")
SUPPORT = "support@example.com"
GOAL_MS = 150.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu(argv: list[str], stdin: bytes) -> float:
    """Seconds of CPU the command took, run to its end."""
    before = _children_cpu()
    result = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.decode()}")
    return _children_cpu() - before


def _mails(folder: Path, count: int, seed: int) -> list[bytes]:
    if not GEN_CORPUS.is_file():
        sys.exit(f"corpus generator not found: {GEN_CORPUS}")
    subprocess.run(
        [sys.executable, str(GEN_CORPUS), str(count), str(folder), "--seed", str(seed)],
        check=True,
        capture_output=True,
    )
    return [path.read_bytes() for path in sorted(folder.glob("*.eml"))[:count]]


def _setup(folder: Path) -> Path:
    config = folder / "mailsupport.toml"
    config.write_text(
        f'[support]\naddress = "{SUPPORT}"\n'
        f'[database]\nurl = "sqlite:///{folder / "mailsupport.db"}"\n',
        encoding="utf-8",
    )
    subprocess.run([str(MAILSUPPORT), "-c", str(config), "db", "upgrade"], check=True)
    return config


def _deliver(config: Path, mail: bytes, *extra: str) -> tuple[list[str], bytes]:
    """The README's pipe command line, with a mail for its standard input."""
    argv = [str(MAILSUPPORT), "-c", str(config), "deliver", *extra]
    return [*argv, "-f", "carol@customer.test", "-r", SUPPORT], mail


def _round(config: Path, pool: Iterator[bytes], count: int, process: bool) -> dict[str, float]:
    """CPU per run of each command; the commands take turns, so that they share whatever else
    the machine is doing alike."""
    commands: dict[str, tuple[str, ...] | None] = {"python -c pass": None}
    commands["deliver --no-process"] = ("--no-process",)
    if process:
        commands["deliver (processing)"] = ()
    totals = dict.fromkeys(commands, 0.0)
    for _ in range(count):
        for name, extra in commands.items():
            if extra is None:
                totals[name] += _cpu([sys.executable, "-c", "pass"], b"")
            else:
                totals[name] += _cpu(*_deliver(config, next(pool), *extra))
    return {name: total / count for name, total in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="runs of each command per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--process", action="store_true", help="also time processing mail")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        config = _setup(folder)
        # A mail is stored once: every run of every round gets one of its own.
        runs = args.count * args.rounds * (2 if args.process else 1)
        pool = iter(_mails(folder / "corpus", runs, args.seed))
        results: dict[str, list[float]] = {}
        for number in range(1, args.rounds + 1):
            figures = _round(config, pool, args.count, args.process)
            _print_round(number, figures)
            for name, seconds in figures.items():
                results.setdefault(name, []).append(seconds)
        _print_summary(results)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _print_round(number: int, figures: dict[str, float]) -> None:
    base = figures["python -c pass"]
    shown = ", ".join(f"{name} {s * 1000:.0f} ms ({s / base:.1f} x)" for name, s in figures.items())
    print(f"round {number}: {shown}")


def _print_summary(results: dict[str, list[float]]) -> None:
    base = statistics.median(results["python -c pass"])
    print("median CPU per run (user+sys):")
    for name, values in results.items():
        seconds = statistics.median(values)
        print(f"  {name:22} {seconds * 1000:6.0f} ms  {seconds / base:5.1f} x python -c pass")
    ours = statistics.median(results["deliver --no-process"]) * 1000
    verdict = "met" if ours < GOAL_MS else "NOT met"
    print(f"goal: deliver --no-process under {GOAL_MS:.0f} ms: {verdict} ({ours:.0f} ms)")


if __name__ == "__main__":
    main()
