"""A worker process's own bounds: it dies with its daemon, and its memory can be limited.

A worker left running after its daemon was killed (``kill -9``, the OOM killer) went on
processing mail, with the old configuration, for whatever daemon was started next: work shared
with a stranger. On Linux the kernel kills a worker the moment its parent dies
(``PR_SET_PDEATHSIG``); the parent may have died before the worker got to ask for that, so the
worker then checks that its parent is still the daemon that started it.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
MEGABYTE = 1024 * 1024


def die_with_parent(parent: int) -> bool:
    """Have the kernel kill this process when its parent ends; False if ``parent`` is gone.

    Linux only; elsewhere only the check is made, and the worker watches its parent itself.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    # After the request: a parent that dies from now on kills us, and one dead before shows.
    return os.getppid() == parent


def limit_memory(megabytes: int) -> None:
    """Bound this process's address space; past it, allocations fail with MemoryError.

    The kernel's OOM killer picks a process by size when the machine runs short, and a worker
    swollen by one mail may take the database or the listener with it, or be killed again and
    again. Bounded, the worker fails on its own (the mail is quarantined, or the worker dies
    and the mail is counted against).
    """
    if megabytes <= 0:
        return
    wanted = megabytes * MEGABYTE
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    # prlimit, not setrlimit: the systemd unit's system call filter (~@resources) refuses the
    # latter and allows the former, as it does getrlimit.
    resource.prlimit(0, resource.RLIMIT_AS, (wanted, wanted))
