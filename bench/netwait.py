"""Loopback helpers shared by the benchmarks: a free port, and waiting for a server on it."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Callable

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, alive: Callable[[], bool], timeout: float, who: str) -> None:
    """Return once ``port`` accepts connections; exit with one line if the server died or hung."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            sys.exit(f"{who}: the server exited before it listened")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    sys.exit(f"{who}: nothing listening on port {port} after {timeout:.0f}s")
