"""Host memory of each process of an `affssl` command: peak RSS, and peak PSS / USS (shared pages split).

RSS counts every resident page a process maps, shared file pages included, so N ranks mapping one
decoded data set each show it in full; PSS divides a shared page among its N users and USS counts
only the process's own pages. Peak RSS is the kernel's VmHWM; PSS and USS are sampled every 0.2 s
from /proc/self/smaps_rollup (their peaks are a lower bound). Linux only.

    # one process
    python benchmarks/rank_memory.py pretrain --dataset /work/data --out /tmp/m1 --set backbone.width=4 ...
    # two ranks of one node
    torchrun --standalone --nproc_per_node=2 benchmarks/rank_memory.py pretrain --dataset /work/data ...

Each process prints one line `rank_memory {"rank": r, "peak_rss_mib": …, "peak_pss_mib": …, …}` when it ends.
AFFSSL_BENCH_STEPS=K ends each epoch after K steps (memory needs the data, the model and a few
steps, not a whole epoch); the epoch's logged means are then not meaningful.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import sys
import threading
import time

MIB = 2**10  # /proc reports kB


def _fields(path: str, names: tuple[str, ...]) -> dict[str, int]:
    out = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in names:
                out[key] = int(rest.split()[0])  # kB
    return out


def _sample(peaks: dict[str, int], stop: threading.Event) -> None:
    while not stop.wait(0.2):
        m = _fields("/proc/self/smaps_rollup", ("Pss", "Private_Clean", "Private_Dirty"))
        peaks["pss"] = max(peaks["pss"], m["Pss"])
        peaks["uss"] = max(peaks["uss"], m["Private_Clean"] + m["Private_Dirty"])


def _report(peaks: dict[str, int], stop: threading.Event, t0: float) -> None:
    stop.set()
    status = _fields("/proc/self/status", ("VmHWM", "VmRSS", "RssAnon", "RssFile"))
    roll = _fields("/proc/self/smaps_rollup", ("Pss", "Private_Clean", "Private_Dirty"))
    record = {
        "rank": int(os.environ.get("RANK", "0")),
        "world": int(os.environ.get("WORLD_SIZE", "1")),
        "peak_rss_mib": round(status["VmHWM"] / MIB),
        "peak_pss_mib": round(max(peaks["pss"], roll["Pss"]) / MIB),
        "peak_uss_mib": round(max(peaks["uss"], roll["Private_Clean"] + roll["Private_Dirty"]) / MIB),
        "end_rss_anon_mib": round(status["RssAnon"] / MIB),
        "end_rss_file_mib": round(status["RssFile"] / MIB),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print("rank_memory " + json.dumps(record), file=sys.stderr, flush=True)


def main() -> None:
    from affssl import engine
    from affssl.cli import app

    if steps := int(os.environ.get("AFFSSL_BENCH_STEPS", "0")):
        batches = engine.batches
        engine.batches = lambda *args, **kwargs: itertools.islice(batches(*args, **kwargs), steps)
    peaks, stop, t0 = {"pss": 0, "uss": 0}, threading.Event(), time.perf_counter()
    threading.Thread(target=_sample, args=(peaks, stop), daemon=True).start()
    atexit.register(_report, peaks, stop, t0)
    app(sys.argv[1:], prog_name="affssl")


if __name__ == "__main__":
    main()
