"""How many CPUs a run may use, and how busy they already are.

torch starts one intra-op thread per visible core and ignores a container's CPU quota (cgroup v2
`cpu.max`, v1 `cpu.cfs_quota_us / cpu.cfs_period_us`: a pod's limit, `docker run --cpus`), so a
quota-limited process oversubscribes its share and waits on itself. `available` is the number the
run should use: the CPUs of the affinity mask (`taskset`), capped by every quota on the way from
this process's cgroup to the root (rounded down, at least 1) and by an explicit OMP_NUM_THREADS.
It never depends on load; `busy_cpus` measures load separately (/proc/stat), for a line only:
the CPU time the mask's CPUs spent busy over a window of at least half a second, less this
process's own (and its reaped children's, /proc/self/stat). The window need not be slept: a
`Mark` taken earlier (the CLI marks its start, before importing torch, and the moment its data is
ready) opens it, so the ~3 s a command spends importing and loading double as the sample; only
when no mark is old enough, or the youngest old-enough one is older than MAX_WINDOW_S (a long
decode: the load then may have changed), does it sleep the rest from the youngest mark.
Paths are arguments, so tests hand in their own files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
PROC_STAT = Path("/proc/stat")
PROC_SELF_STAT = Path("/proc/self/stat")
MAX_WINDOW_S = 10.0


def affinity() -> set[int]:
    """The CPUs this process may run on (the affinity mask), or all of them where the OS cannot say."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _chain(top: Path, relative: str) -> list[Path]:
    """top/relative and each of its parents up to top (the cgroup and every cgroup above it)."""
    folder = top / relative.strip("/")
    folders = [folder]
    while folder != top and top in folder.parents:
        folder = folder.parent
        folders.append(folder)
    return folders


def cgroup_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """The CPU quota in CPUs (2.5 = 250 ms per 100 ms) of this process's cgroup and those above it; None: none."""
    quotas: list[float] = []
    for line in (_read(self_cgroup) or "").splitlines():
        _, controllers, relative = line.split(":", 2)
        if controllers == "":  # cgroup v2: "0::/path"
            for folder in _chain(root, relative):
                parts = (_read(folder / "cpu.max") or "max").split()
                if parts[0] != "max" and len(parts) == 2:
                    quotas.append(int(parts[0]) / int(parts[1]))
        elif "cpu" in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path", mounted per controller set
            for mount in {root / controllers, root / "cpu", root / "cpu,cpuacct"}:
                for folder in _chain(mount, relative):
                    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                    if quota and period and int(quota) > 0 and int(period) > 0:
                        quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def available(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP, cpus: set[int] | None = None,
              omp: bool = True) -> int:  # fmt: skip
    """CPUs a run may use: the affinity mask capped by the cgroup quota (floor, ≥ 1) and, with `omp`, by
    OMP_NUM_THREADS (a cap on threads, not on processes: loader workers take omp=False)."""
    n = len(cpus if cpus is not None else affinity())
    quota = cgroup_quota(root, self_cgroup)
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    cap = os.environ.get("OMP_NUM_THREADS", "").strip() if omp else ""
    if cap.isdigit() and int(cap) > 0:
        n = min(n, int(cap))
    return max(1, n)


def describe(n: int, root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> str:
    """Where the figure comes from, for the line a run prints."""
    quota = cgroup_quota(root, self_cgroup)
    why = [f"{len(affinity())} CPUs in the affinity mask"]
    why += [f"cgroup quota {quota:g} CPUs"] if quota is not None else []
    why += [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if os.environ.get("OMP_NUM_THREADS") else []
    return f"{n} ({', '.join(why)})"


def resolve(threads: str | int) -> int:
    """The thread count of `train.threads`: "auto" → `available()`, N → N."""
    return available() if threads == "auto" else int(threads)


def cpu_times(stat: Path = PROC_STAT) -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) jiffies since boot, from /proc/stat (idle and iowait are not busy)."""
    out = {}
    for line in (_read(stat) or "").splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


def own_times(stat: Path = PROC_SELF_STAT) -> int:
    """This process's CPU time (all its threads) plus that of its reaped children, in jiffies (0 where unknown)."""
    text = _read(stat)
    if not text or ")" not in text:
        return 0
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, so utime (14) is [11]
    return sum(int(v) for v in fields[11:15])  # utime stime cutime cstime


@dataclass(frozen=True)
class Mark:
    """One reading that opens a busy window: when, every CPU's jiffies, and this process's own."""

    at_s: float  # time.monotonic()
    cpu: dict[int, tuple[int, int]]  # per CPU (busy, total) jiffies
    own: int  # own_times()


def mark(read: Callable[[], dict[int, tuple[int, int]]] = cpu_times, own: Callable[[], int] = own_times,
         clock: Callable[[], float] = time.monotonic) -> Mark:  # fmt: skip
    return Mark(clock(), read(), own())


_MARKS: list[Mark] = []


def mark_window() -> None:
    """Remember this moment as a possible start of the busy window (cheap: two small /proc reads)."""
    _MARKS.append(mark())
    del _MARKS[:-4]


def window_start(seconds: float, marks: list[Mark] | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> Mark | None:  # fmt: skip
    """The youngest mark at least `seconds` old, unless older than MAX_WINDOW_S; else the youngest mark if it is
    younger than `seconds` (the rest is slept); else None (a fresh sample)."""
    marks = _MARKS if marks is None else marks
    now = clock()
    old_enough = [m for m in marks if now - m.at_s >= seconds]
    if old_enough and now - old_enough[-1].at_s <= MAX_WINDOW_S:
        return old_enough[-1]
    return marks[-1] if marks and now - marks[-1].at_s < seconds else None


def busy_cpus(cpus: set[int], seconds: float = 0.5, since: Mark | None = None,
              read: Callable[[], dict[int, tuple[int, int]]] = cpu_times, own: Callable[[], int] = own_times,
              sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
              ) -> float:  # fmt: skip
    """How many of `cpus` other work keeps busy, in CPUs (0 … len(cpus)), over at least `seconds` from `since`
    (None: from now), this process's own CPU time taken out."""
    start = since or mark(read, own, clock)
    rest = seconds - (clock() - start.at_s)
    if rest > 0:
        sleep(rest)
    return busy_between(cpus, start, mark(read, own, clock))


def busy_between(cpus: set[int], start: Mark, end: Mark) -> float:
    """CPUs of `cpus` busy with other work between two marks: all busy time less this process's own."""
    busy, totals = 0.0, []
    for cpu in cpus:
        if cpu in start.cpu and cpu in end.cpu:
            d_busy, d_total = (a - b for a, b in zip(end.cpu[cpu], start.cpu[cpu], strict=True))
            busy += d_busy / d_total if d_total > 0 else 0.0
            totals.append(d_total)
    per_cpu = sum(totals) / len(totals) if totals and sum(totals) > 0 else 0.0
    mine = (end.own - start.own) / per_cpu if per_cpu else 0.0  # in CPUs over the same window
    return min(float(len(cpus)), max(0.0, busy - mine))
