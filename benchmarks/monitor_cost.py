"""The online monitor's cost against an epoch's training time (goal ≤ 5 %). Not a test.

    python benchmarks/monitor_cost.py --data /work/cifar10                  # the CPU v2 protocol, SimCLR + affine
    python benchmarks/monitor_cost.py --data /work/cifar10 --base byol --no-affine
    python benchmarks/monitor_cost.py --data /work/cifar10 --steps 3 --repeats 1 --set train.monitor_images=1000

The run is examples/cifar10_cpu_v2.toml (40,000 CIFAR-10 images at 16 px, ResNet-18 width 16, batch
256) with its defaults for the monitor (train.monitor_images 10,000 bank images, train.monitor_queries
2,000 test images, the head's R² on 1,000 warped queries); --set changes any field. An epoch's time is
estimated as steps per epoch × the median time of one engine step (benchmarks/_common.EngineStep: the
loop body of affssl.engine under the run's precision policy), timed over --steps steps; the monitor's
time is one `Monitor.score` of the same learner, as the engine calls it after an epoch. Each repeat
times the steps and then the monitor, so load from other processes hits both alike; the table shows
medians (min–max) over --repeats. cost = monitor seconds / (train.monitor_every × epoch seconds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import EngineStep, machine, resolve_device, seconds

from affssl import monitor
from affssl.data import load_dataset
from affssl.spec import METHOD_SPECS, load_spec

PROTOCOL = Path(__file__).resolve().parents[1] / "examples" / "cifar10_cpu_v2.toml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="CIFAR-10 as an image folder (train/ and test/), or a data set name")
    p.add_argument("--base", default="simclr", choices=sorted(METHOD_SPECS))
    p.add_argument("--affine", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=10, help="engine steps timed per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", action="append", default=[], dest="overrides", help="a spec override, as pretrain --set")
    args = p.parse_args()

    device = resolve_device(args.device)
    spec = load_spec(str(PROTOCOL), [f"method.name={args.base}", f"data.dataset={args.data}",
                                     f"affine.enabled={str(args.affine).lower()}", f"train.device={device.type}",
                                     *args.overrides])  # fmt: skip
    data = load_dataset(spec.data, seed=spec.train.seed)
    subset = monitor.pick(data, spec)
    if subset is None:
        raise SystemExit("the monitor is off for this spec (train.monitor_every = 0 or no labels)")
    step = EngineStep(spec, data.train.images, device)
    watcher = monitor.Monitor(subset, spec, step.policy, device)
    steps_per_epoch = len(data.train.images) // spec.train.batch_size
    print(machine(device))
    print(f"{PROTOCOL.name}: {spec.method.name}{' + affine' if spec.affine.enabled else ''}, "
          f"{len(data.train.images)} images at {spec.data.image_size_px} px, batch {spec.train.batch_size}, "
          f"{steps_per_epoch} steps an epoch; precision {step.policy.describe()}; monitor: "
          f"{len(subset.bank)} bank, {len(subset.queries)} queries, "
          f"{0 if subset.phi is None else len(subset.phi)} warps, every {spec.train.monitor_every} epoch(s)",
          flush=True)  # fmt: skip

    step()  # warm-up: allocator, kernels
    watcher.score(step.learner)
    epoch_s, monitor_s, scores = [], [], {}
    for r in range(args.repeats):
        epoch_s.append(seconds(step, args.steps, device) / args.steps * steps_per_epoch)
        t = time.perf_counter()
        scores = watcher.score(step.learner)
        monitor_s.append(time.perf_counter() - t)
        print(f"repeat {r + 1}: epoch ≈ {epoch_s[-1]:.1f} s, monitor {monitor_s[-1]:.2f} s")
    cost = [m / (spec.train.monitor_every * e) for m, e in zip(monitor_s, epoch_s, strict=True)]

    def cell(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"

    print("\n| epoch s (est.) | monitor s | cost % (goal ≤ 5) |\n|---|---|---|")
    print(f"| {cell(epoch_s, '.1f')} | {cell(monitor_s, '.2f')} | {cell([100 * c for c in cost], '.2f')} |")
    print(f"last scores (untrained encoder): {monitor.describe(scores)}")
    if torch.cuda.is_available() and device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
