"""What the bf16 convolution guard (affssl/convguard.py) costs: the probe at run start, the step. Not a test.

    python benchmarks/guard_cost.py                                  # mobilenet_v3_small and resnet18 (no CIFAR stem)
    python benchmarks/guard_cost.py --backbones efficientnet_b0 --image-size 16 --repeats 5

Per encoder at --image-size: the probe's wall time (one no-grad forward pass of one image per crop
size), how many convolutions it guards, and the engine's training step (SimCLR + affine, batch
--batch-size) in three settings: bf16 unguarded (what train.precision = bf16 did before the guard:
fast and wrong where a layer meets the bug), bf16 with the guarded layers in fp32 (`auto` now), and
the whole model in fp32. Medians (min–max) over --repeats of --steps steps each, the settings taken
in turn within a repeat.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import EngineStep, images, machine, seconds

from affssl import convguard
from affssl.spec import load_spec

CPU = torch.device("cpu")


def step_for(name: str, args: argparse.Namespace, precision: str, guarded: bool) -> EngineStep:
    """The engine's step for NAME[:nostem] in one precision, with the guard applied or not."""
    name, _, stem = name.partition(":")
    sets = ["method.name=simclr", f"train.batch_size={args.batch_size}", f"data.image_size_px={args.image_size}",
            f"backbone.name={name}", "train.device=cpu", f"train.precision={precision}"]  # fmt: skip
    spec = load_spec("default", sets + (["backbone.cifar_stem=false"] if stem else []))
    step = EngineStep(spec, images(None, 2 * args.batch_size, args.image_size), CPU)
    if guarded:
        convguard.guard(step.learner, convguard.probe(step.learner.backbone, [args.image_size], prefix="backbone"))
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["mobilenet_v3_small", "resnet18:nostem"],
                   help="NAME or NAME:nostem (a ResNet without the CIFAR stem)")  # fmt: skip
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    settings = (("bf16, unguarded", "bf16", False), ("bf16, guarded (auto)", "bf16", True), ("fp32", "fp32", False))
    print(f"**Machine:** {machine(CPU)}  ")
    print(f"**Step:** SimCLR + affine, {args.image_size} px, batch {args.batch_size}; {args.steps} steps, "
          f"median of {args.repeats}\n")  # fmt: skip
    print("| encoder | probe ms | guarded convs | setting | ms / step | min–max | vs unguarded |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name in args.backbones:
        steps = [step_for(name, args, precision, guarded) for _, precision, guarded in settings]
        backbone = steps[0].learner.backbone
        t0 = time.perf_counter()
        found = convguard.probe(backbone, [args.image_size])
        probe_ms = (time.perf_counter() - t0) * 1000
        for step in steps:  # warm-up: allocator, oneDNN primitives
            step()
        times: list[list[float]] = [[] for _ in settings]
        for _ in range(args.repeats):
            for k, step in enumerate(steps):
                times[k].append(seconds(step, args.steps, CPU) / args.steps * 1000)
        base = statistics.median(times[0])
        for k, (label, _, _) in enumerate(settings):
            m = statistics.median(times[k])
            head = f"{name} | {probe_ms:.0f} | {len(found)}" if k == 0 else " | | "
            print(f"| {head} | {label} | {m:.0f} | {min(times[k]):.0f}–{max(times[k]):.0f} | {m / base:.2f}× |")


if __name__ == "__main__":
    main()
