"""Loader worker processes that die with the process that started them.

torch's DataLoader forks its workers; a worker notices its parent is gone only at its next
queue timeout (5 s), and one blocked on a full result pipe never does: after a SIGKILL of the
training process it stayed alive for good, with its share of the parent's memory. Each worker
therefore asks the kernel for a SIGKILL when its parent dies (Linux prctl(PR_SET_PDEATHSIG),
through ctypes), and exits at once if the parent died before it could ask. Elsewhere only torch's
own watchdog remains. (The run lock is not inherited either: affssl.runlock closes it in every
forked child.)
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def init_fn() -> Callable[[int], None]:
    """A DataLoader `worker_init_fn` that ties each worker's life to this process's."""
    return functools.partial(die_with_parent, os.getpid())


def die_with_parent(parent_pid: int, worker_id: int) -> None:
    """In a worker: SIGKILL when the parent dies; exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: torch's watchdog only
            pass
    if os.getppid() != parent_pid:  # the parent died between the fork and the prctl
        os._exit(1)
