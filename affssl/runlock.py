"""One writer per run folder: RUN/.lock, held with flock(2) for the life of the command.

The file holds one line about its holder (pid, host, start time) for the message a second writer
gets. The kernel drops a flock when its process ends, however it ends (SIGKILL, OOM, power-off of
a container), so a lock file left by a killed run is stale: the next writer finds it unlocked and
takes it over. The holder deletes the file when it finishes. Under torchrun only rank 0 takes it.
flock is advisory and per open file: a second `hold` of the same run, even in the same process,
is refused.

The lock belongs to the process that took it, not to its children: loader workers are forked, and a
forked child shares the locked open file (a flock lasts while any process holds it), so after a
SIGKILL of the run its workers kept the run locked until they ended. Every fork closes the child's
copy at once (os.register_at_fork), which leaves the lock with the parent alone; an exec'd child
never gets it (the descriptor is close-on-exec, Python's default).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from affssl.errors import UserError, write_failed
from affssl.runs import LOCK

_held: set[int] = set()  # lock descriptors this process holds; a forked child closes its copies


def _close_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)  # the child's reference only: the parent keeps the lock (never LOCK_UN here)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLockedError(UserError):
    """Another live process writes the run folder."""


@contextmanager
def hold(run: Path) -> Iterator[str | None]:
    """Create `run` if needed and lock it; yields the stale holder's line when one was taken over, else None."""
    if run.exists() and not run.is_dir():
        raise UserError(f"--out {run} is a file; name a folder")
    path = run / LOCK
    try:
        run.mkdir(parents=True, exist_ok=True)
        fd, stale = _acquire(path)
    except OSError as err:
        raise write_failed(path, err) from None
    _held.add(fd)
    try:
        yield stale
    finally:
        path.unlink(missing_ok=True)  # unlink while still holding, so no one locks a file about to vanish
        _held.discard(fd)
        os.close(fd)


def _acquire(path: Path) -> tuple[int, str | None]:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd) or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{path.parent} is being written by {holder}; wait for it to end (or stop it), or pass another --out"
            ) from None
        except OSError:
            os.close(fd)
            raise
        if _same_file(fd, path):  # else the last holder deleted it between our open and flock: retry
            break
        os.close(fd)
    stale = _read(fd) or None
    line = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode(), 0)
    except OSError:
        path.unlink(missing_ok=True)
        os.close(fd)
        raise
    return fd, stale


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read(fd: int) -> str:
    return os.pread(fd, 256, 0).decode(errors="replace").strip()
