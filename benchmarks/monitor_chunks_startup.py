"""The online monitor's start-up cost on chunk storage: seconds to decode its fixed subset once. Not a test.

    python benchmarks/monitor_chunks_startup.py --data /work/cifar10
    python benchmarks/monitor_chunks_startup.py --data /work/cifar10 --set train.monitor_images=2000 --repeats 1
    python benchmarks/monitor_chunks_startup.py --data /data/imagenet --set data.image_size_px=224

The run's spec is the default preset with data.storage = "chunks" on --data (an image folder) and its monitor
defaults (train.monitor_images 10,000 bank images from the chunk files, train.monitor_queries 2,000 from the
test split's files, or held out of train); --set changes any field. The chunks are written first (once, under
--cache), then each repeat times `monitor.pick_chunks` as the engine calls it at a run's start; the table shows
the median (min–max) seconds, images per second and the host memory the subset holds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from affssl import monitor
from affssl.data import storage
from affssl.spec import load_spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="an image folder (train/ and test/ or val/, or class folders)")
    p.add_argument("--cache", default=None, help="folder for the chunks (default: a temporary one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", action="append", default=[], dest="overrides", help="a spec override, as pretrain --set")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        spec = load_spec("default", [f"data.dataset={args.data}", "data.storage=chunks", f"data.root={cache}",
                                     *args.overrides])  # fmt: skip
        t = time.perf_counter()
        spec, feed = storage.prepare(spec, torch.device("cpu"), None, progress=True)
        print(f"chunks of {feed.count:,} training images ready in {time.perf_counter() - t:.1f} s; "
              f"{feed.workers} loader worker(s), {torch.get_num_threads()} thread(s)", flush=True)  # fmt: skip
        times, subset = [], None
        for r in range(args.repeats):
            t = time.perf_counter()
            subset = monitor.pick_chunks(feed, spec)
            times.append(time.perf_counter() - t)
            print(f"repeat {r + 1}: {times[-1]:.2f} s", flush=True)
    if subset is None:
        raise SystemExit("the monitor is off for this spec (train.monitor_every = 0 or no labels)")
    n = len(subset.bank) + len(subset.queries)
    mib = n * subset.bank.source[0].numel() / 2**20
    mid = statistics.median(times)
    print(f"\n| bank + queries | px | seconds | img/s | MiB held |\n|---|---|---|---|---|\n"
          f"| {len(subset.bank):,} + {len(subset.queries):,} | {spec.data.image_size_px} | {mid:.2f} "
          f"({min(times):.2f}–{max(times):.2f}) | {n / mid:,.0f} | {mib:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
