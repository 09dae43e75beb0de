"""A killed run's loader workers: they never hold RUN/.lock, and they die with the training process.

Real processes and real signals: `affssl pretrain` on chunks with two loader workers, stopped
(SIGSTOP) for a second and then killed (SIGKILL), as the issue did. Torch's own parent watchdog runs
only between two items, so a worker stuck inside a read (a hung network file system, a full pipe)
never ran it and stayed for good: the second test holds the chunk reader's and writer's workers
inside their item and kills their process; only the kernel's parent-death signal ends them.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("litdata")

from test_chunks import TINY, make_folder, spec_for

from affssl import runlock, runs
from affssl.data import chunkread, storage

DEADLINE_S = 60  # generous: a loaded machine may be slow to schedule a dying process


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is pid."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                state, ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if int(ppid) == pid and state != "Z":
                found.append(int(proc.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def open_files(pid: int) -> set[str]:
    """The files a process holds open ({} when it ended meanwhile)."""
    names = set()
    try:
        for fd in (Path("/proc") / str(pid) / "fd").iterdir():
            try:
                names.add(os.readlink(fd))
            except OSError:
                continue
    except OSError:
        pass
    return names


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_runs_workers_never_hold_its_lock_and_die_with_it(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    sets = [*TINY, f"data.dataset={folder}", f"data.root={tmp_path / 'cache'}", "data.storage=chunks",
            "data.workers=2", "train.epochs=500"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "affssl", "pretrain", "--no-progress", "--out", str(run),
                             *[a for o in sets for a in ("--set", o)]], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline, workers, checked = time.time() + 300, [], 0
        while checked == 0 and time.time() < deadline and proc.poll() is None:
            workers = children(proc.pid) if runs.read_metrics(run) else []
            for pid in workers:  # while the run holds its lock, no worker has the lock file open
                held = open_files(pid)
                assert str(run / runs.LOCK) not in held, f"loader worker {pid} holds {run / runs.LOCK}"
                checked += bool(held)
            time.sleep(0.01)
        assert checked, "no loader worker seen: " + (proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGSTOP)
        workers = children(proc.pid) or workers
        time.sleep(1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # the lock is free the moment the training process is gone: --resume is not refused
        fd = os.open(run / runs.LOCK, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        with runlock.hold(run) as stale:
            assert stale.startswith(f"pid {proc.pid} ")
        deadline = time.time() + DEADLINE_S
        while any(alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.05)
        assert not [p for p in workers if alive(p)], "loader workers outlived the killed run"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


STUCK = """
import os, sys, time, torch
from pathlib import Path
from affssl.data import chunkread, chunkwrite
from test_chunks import make_folder, spec_for
from affssl.data import storage

tmp = Path(sys.argv[2])
def stuck(self, *args):  # inside the worker, after its init: say so, then never return
    (tmp / f"worker-{os.getpid()}").touch()
    time.sleep(3600)
if sys.argv[1] == "read":
    spec = spec_for(make_folder(tmp / "imgs"), tmp / "cache", "data.storage=chunks", "data.workers=0")
    chunks = chunkread.open_chunks(storage.written(spec.data, False))
    chunkread._Reader.__getitems__ = stuck
    feed = chunkread.ChunkFeed(chunks, torch.arange(chunks.count), torch.device("cpu"), workers=2)
    list(feed.epoch([torch.arange(16), torch.arange(16, 32)], 0, 16, 0))
else:
    chunkwrite._Encoder.__getitem__ = stuck
    folder = make_folder(tmp / "imgs", per_class=40)  # two batches of files: one for each worker
    spec = spec_for(folder, tmp / "cache", "data.storage=chunks", "data.workers=2")
    storage.written(spec.data, False)
"""


def start_stuck(which: str, tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """A process whose chunk `which` (read | write) loader has two workers held inside an item; their pids."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", STUCK, which, str(tmp_path)], env=env, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.time() + 120
    while len(list(tmp_path.glob("worker-*"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        raise AssertionError(proc.stderr.read())
    return proc, [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]


def end(proc: subprocess.Popen, tmp_path: Path) -> None:
    """Kill what a test started that is still there (without the fixes the workers would stay)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("which", ["read", "write"])
def test_loader_workers_stuck_in_an_item_die_with_their_process(tmp_path, which):
    proc, workers = start_stuck(which, tmp_path)
    try:
        assert len(workers) == 2 and all(alive(p) for p in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + DEADLINE_S
        while any(alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.05)
        assert not [p for p in workers if alive(p)], f"the {which} loader's workers outlived their process"
    finally:
        end(proc, tmp_path)


def test_a_killed_chunk_writers_temporary_folder_goes_with_the_next_write(tmp_path):
    proc, _ = start_stuck("write", tmp_path)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        end(proc, tmp_path)
    chunks = tmp_path / "cache" / "chunks"
    (dead,) = chunks.glob(".*.tmp")
    assert dead.name.endswith(f".{os.uname().nodename}.{proc.pid}.tmp")
    live = chunks / f".{'0' * 64}.{os.uname().nodename}.{os.getpid()}.tmp"  # a live writer's: kept
    other = chunks / f".{'1' * 64}.elsewhere.{proc.pid}.tmp"  # another host's: its pids are not ours to judge
    live.mkdir()
    other.mkdir()
    spec = spec_for(tmp_path / "imgs", tmp_path / "cache", "data.storage=chunks", "data.workers=0")
    assert chunkread.open_chunks(storage.written(spec.data, False)).count == 80
    assert not dead.exists() and live.is_dir() and other.is_dir()
    dead.mkdir()  # a dead writer's folder of another key: swept by a run that finds its own chunks whole
    storage.written(spec.data, False)
    assert not dead.exists()
