"""The default run alone and beside a 2-thread matrix-product process, at train.threads 2, 1 and auto. Not a test.

    python benchmarks/contention.py                                   # `affssl pretrain` as shipped, median of 3
    python benchmarks/contention.py --repeats 1 --set train.epochs=1 --set data.limit=256   # a quick check
    python benchmarks/contention.py --only load:1 --set train.monitor_every=0   # the run as it was before the monitor

Each measurement is the wall time of a fresh `affssl pretrain --no-progress` process (import, data
load and training: what a person waits for), with OMP_NUM_THREADS removed from its environment so
that `auto` sees the machine as a user's shell would. "beside load" starts the load process first
(torch, 2 threads, N×N float32 matrix products in a loop), waits until it computes, and stops it
after the run. Conditions alternate within each repeat, so slow spells hit all of them alike; the
table shows medians (min–max) over --repeats and each median against the run alone at auto.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine

LOAD = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(int(sys.argv[2]), int(sys.argv[2]))
print("ready", flush=True)
while True:
    a = torch.mm(a, a).clamp_(-1, 1)
"""
CONDITIONS = (("alone", "auto"), ("beside load", "2"), ("beside load", "1"), ("beside load", "auto"))


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def timed_run(threads: str, extra: list[str]) -> float:
    """Wall seconds of one `affssl pretrain` at train.threads = threads."""
    out = Path(tempfile.mkdtemp(prefix="contention-"))
    sets = [a for s in [f"train.threads={threads}", *extra] for a in ("--set", s)]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "affssl", "pretrain", "--no-progress", "--out", str(out / "run"), *sets],
                   env=env(), check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def with_load(threads: int, size: int):
    """Start the matrix-product process and return it once it computes."""
    proc = subprocess.Popen([sys.executable, "-c", LOAD, str(threads), str(size)], env=env(), stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--load-threads", type=int, default=2)
    p.add_argument("--matrix", type=int, default=1024, help="side of the load's square matrices")
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for the run (a smaller one)")
    p.add_argument("--only", default=None, help="conditions to run, e.g. 'alone:auto,load:1' (alone is always run)")
    args = p.parse_args()
    wanted = {("alone" if w == "alone" else "beside load", t) for w, t in
              (c.split(":") for c in args.only.split(","))} if args.only else set(CONDITIONS)  # fmt: skip
    times: dict[tuple[str, str], list[float]] = {c: [] for c in CONDITIONS if c in wanted or c == CONDITIONS[0]}
    for _ in range(args.repeats):
        for where, threads in times:
            load = with_load(args.load_threads, args.matrix) if where != "alone" else None
            try:
                times[(where, threads)].append(timed_run(threads, args.sets))
            finally:
                if load is not None:
                    load.kill()
                    load.wait()
    from affssl import cpus

    alone = statistics.median(times[CONDITIONS[0]])
    print(f"**Machine:** {machine(torch.device('cpu'))}; train.threads=auto resolves to {cpus.available()}  ")
    print(f"**Run:** `affssl pretrain --no-progress{''.join(f' --set {s}' for s in args.sets)}`; load: "
          f"{args.load_threads}-thread {args.matrix}² float32 matrix products; median of {args.repeats}\n")  # fmt: skip
    print("| condition | train.threads | wall s | min–max | vs alone |")
    print("|---|---|---:|---:|---:|")
    for (where, threads), values in times.items():
        m = statistics.median(values)
        print(f"| {where} | {threads} | {m:.1f} | {min(values):.1f}–{max(values):.1f} | {m / alone:.2f}× |")


if __name__ == "__main__":
    main()
