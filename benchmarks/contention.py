"""The default run alone and beside a 2-thread matrix-product process, at train.threads 2, 1 and auto. Not a test.

    python benchmarks/contention.py                                   # `affssl pretrain` as shipped, median of 3
    python benchmarks/contention.py --repeats 1 --set train.epochs=1 --set data.limit=256   # a quick check
    python benchmarks/contention.py --only load:1 --set train.monitor_every=0   # the run as it was before the monitor
    git worktree add /tmp/old REV && python benchmarks/contention.py --baseline /tmp/old --set train.monitor_every=0

--baseline DIR runs another checkout of affssl (e.g. the commit an issue measured) in the same
repeats, alternating with this one, so the two are compared side by side under the same load.
A version without train.threads is given its thread count through OMP_NUM_THREADS instead
(`auto`: unset, torch's own count); --set applies to this checkout only.

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


def timed_run(threads: str, extra: list[str], baseline: Path | None = None) -> float:
    """Wall seconds of one `affssl pretrain` at train.threads = threads (of the checkout `baseline`, if given)."""
    out = Path(tempfile.mkdtemp(prefix="contention-"))
    run_env, sets = env(), [a for s in [f"train.threads={threads}", *extra] for a in ("--set", s)]
    if baseline is not None:  # its own code, threads through OpenMP's variable
        run_env["PYTHONPATH"], sets = str(baseline), []
        if threads != "auto":
            run_env["OMP_NUM_THREADS"] = threads
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "affssl", "pretrain", "--no-progress", "--out", str(out / "run"), *sets],
                   env=run_env, check=True, stdout=subprocess.DEVNULL, cwd=baseline)  # fmt: skip
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
    p.add_argument("--baseline", type=Path, default=None, help="another affssl checkout, run alternately with this one")
    args = p.parse_args()
    wanted = {("alone" if w == "alone" else "beside load", t) for w, t in
              (c.split(":") for c in args.only.split(","))} if args.only else set(CONDITIONS)  # fmt: skip
    conditions = [c for c in CONDITIONS if c in wanted or c == CONDITIONS[0]]
    versions: dict[str, Path | None] = {"this": None} | ({"baseline": args.baseline} if args.baseline else {})
    times: dict[tuple[str, str, str], list[float]] = {(v, *c): [] for c in conditions for v in versions}
    for _ in range(args.repeats):
        for where, threads in conditions:
            for version, checkout in versions.items():
                load = with_load(args.load_threads, args.matrix) if where != "alone" else None
                try:
                    times[(version, where, threads)].append(timed_run(threads, args.sets, checkout))
                finally:
                    if load is not None:
                        load.kill()
                        load.wait()
    from affssl import cpus

    print(f"**Machine:** {machine(torch.device('cpu'))}; train.threads=auto resolves to {cpus.available()}  ")
    print(f"**Run:** `affssl pretrain --no-progress{''.join(f' --set {s}' for s in args.sets)}`; load: "
          f"{args.load_threads}-thread {args.matrix}² float32 matrix products; median of {args.repeats}"
          + (f"; baseline: {args.baseline} as it stands (threads through OMP_NUM_THREADS)" if args.baseline else "")
          + "\n")  # fmt: skip
    print("| version | condition | train.threads | wall s | min–max | vs alone | this ÷ baseline |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (version, where, threads), values in times.items():
        m, alone = statistics.median(values), statistics.median(times[(version, *CONDITIONS[0])])
        ratio = m / statistics.median(times[("baseline", where, threads)]) if args.baseline else None
        shown = f"{ratio:.2f}" if ratio is not None and version == "this" else ""
        print(f"| {version} | {where} | {threads} | {m:.1f} | {min(values):.1f}–{max(values):.1f} | {m / alone:.2f}× "
              f"| {shown} |")  # fmt: skip


if __name__ == "__main__":
    main()
