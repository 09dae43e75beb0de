"""One training process on every thread against N processes on 1/N of them each (`affssl ablate --jobs N`). Not a test.

    python benchmarks/jobs_speed.py                          # SimCLR + affine, ResNet-18 w16, 16 px, b256
    python benchmarks/jobs_speed.py --base byol --no-affine --jobs 2 --repeats 5

Each configuration runs the engine's real training step (`_common.EngineStep`: batched views, encoder
passes, method loss, affine term, backward, Adam, EMA) in freshly spawned processes on uint8 images in
memory: "1 × T" is one process with all T threads; "N × T/N" is N processes started together (a
barrier after their warm-up steps), each with T/N threads, whose rates add up. Each repeat runs both
in turn, so load from elsewhere hits both alike; the table shows medians (min–max) over --repeats
and the ratio of the medians. img/s counts the batch's images, as `affssl pretrain` does.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics

import torch
from _common import EngineStep, images, machine, run_spec, seconds, study_step_args

CPU = torch.device("cpu")


def worker(threads: int, args: argparse.Namespace, barrier, results) -> None:
    torch.set_num_threads(threads)
    spec = run_spec(args.base, args.batch_size, args.image_size, args.backbone, args.width, "cpu", args.affine)
    step = EngineStep(spec, images(None, 2 * args.batch_size, args.image_size), CPU)
    for _ in range(2):  # warm-up: allocator, oneDNN primitives
        step()
    barrier.wait()
    results.put(args.steps * args.batch_size / seconds(step, args.steps, CPU))


def rate(processes: int, threads: int, args: argparse.Namespace) -> float:
    """Summed img/s of `processes` processes with `threads` threads each, started together."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    procs = [context.Process(target=worker, args=(threads, args, barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    study_step_args(p)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="T: all of them, by default")
    p.add_argument("--steps", type=int, default=20, help="timed steps per process and repeat")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    per_job = max(1, args.threads // args.jobs)
    one, many = [], []
    for _ in range(args.repeats):
        one.append(rate(1, args.threads, args))
        many.append(rate(args.jobs, per_job, args))

    print(f"**Machine:** {machine(CPU)}  ")
    print(f"**Step:** {args.base}{' + affine' if args.affine else ''}, {args.backbone} width {args.width}, "
          f"{args.image_size} px, batch {args.batch_size}, the engine's precision policy; {args.steps} steps per "
          f"process, median of {args.repeats}\n")  # fmt: skip
    print("| processes × threads | img/s, all processes | min–max | vs 1 process |")
    print("|---|---:|---:|---:|")
    for name, values in ((f"1 × {args.threads}", one), (f"{args.jobs} × {per_job}", many)):
        ratio = statistics.median(values) / statistics.median(one)
        print(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f}–{max(values):,.0f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
