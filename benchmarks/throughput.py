"""Pretraining step throughput against the encoder's bare rate, and the affine module's cost. Not a test.

    python benchmarks/throughput.py                        # SimCLR, ResNet-18 width 64, 32 px, batch 128 and 256
    python benchmarks/throughput.py --base byol --batch-size 512 --device cuda --data /tmp/cifar10
    python benchmarks/throughput.py --quick                # seconds-long smoke run (tiny model)

Measured side by side in one process; each repeat runs the three in turn so that load from other
processes hits all alike; tables show medians (and min–max) over --repeats.

(a) engine img/s: one real training step of `affssl.engine` (the Learner's batched views on the
    device, encoder passes, method loss, affine term, backward, optimizer step, EMA for BYOL) under
    the engine's precision policy (train.precision / memory_format "auto"), on uint8 images already
    in memory, counted as the images the online encoder processes: batch × 3 with the affine module
    (v1, v2, warped v1), × 2 without. BYOL's no-grad target passes are not counted. bare img/s:
    forward + backward of the same encoder alone on random float tensors of the same batch (no
    augmentation, loss = sum of features, no optimizer), in each of fp32/bf16 × contiguous/
    channels_last. ratio = engine / the best bare rate; goal ≥ 0.85 (README "Performance").
(c) the affine module's cost: step time with / without the module (goal ≤ 1.55; 1.5 is the cost
    of the third encoder pass alone), and the step's peak memory with / without (goal ≤ 1.55),
    above the memory in use before the step (model, optimizer state and data excluded). CUDA:
    torch.cuda.max_memory_allocated; CPU: peak RSS (see _common.peak_memory; the table says which).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from _common import EngineStep, images, machine, peak_memory, resolve_device, run_spec, seconds, step_args

from affssl import precision
from affssl.backbones import build_backbone
from affssl.spec import METHOD_SPECS

POLICIES = [(p, f) for p in ("fp32", "bf16") for f in ("contiguous", "channels_last")]


class BareStep:
    """Forward + backward of the encoder alone on a fixed random float batch, under one precision policy."""

    def __init__(self, step: EngineStep, policy: precision.Policy):
        torch.manual_seed(0)
        spec, device = step.spec, step.device
        size = spec.data.image_size_px
        self.backbone = build_backbone(spec.backbone, size).to(device, memory_format=policy.memory_format).train()
        self.x = torch.rand(spec.train.batch_size, 3, size, size, device=device)
        self.x = self.x.contiguous(memory_format=policy.memory_format)
        self.policy = policy

    def __call__(self) -> None:
        with self.policy.autocast():
            out = self.backbone(self.x).float().sum()
        self.backbone.zero_grad(set_to_none=True)
        out.backward()


def measure(args: argparse.Namespace, batch: int, device: torch.device) -> dict:
    pixels = images(args.data, max(args.images, 2 * batch), args.image_size)
    spec = {on: run_spec(args.base, batch, args.image_size, args.backbone, args.width, device.type, on)
            for on in (True, False)}  # fmt: skip
    steps = {"with": EngineStep(spec[True], pixels, device), "without": EngineStep(spec[False], pixels, device)}
    for prec, fmt in POLICIES:
        steps[f"bare {prec} {fmt}"] = BareStep(steps["with"], precision.resolve(prec, fmt, device))
    for fn in steps.values():  # warm-up: allocator, kernels, optimizer state
        seconds(fn, args.warmup, device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for key, fn in steps.items():
            times[key].append(seconds(fn, args.steps, device) / args.steps)
    memory = {k: peak_memory(steps[k], args.mem_steps, device) for k in ("without", "with")}
    images_per_step = {k: batch for k in steps} | {k: steps[k].passes * batch for k in ("with", "without")}
    rate = {k: images_per_step[k] / statistics.median(v) for k, v in times.items()}
    spread = {k: (images_per_step[k] / max(v), images_per_step[k] / min(v)) for k, v in times.items()}
    best = max((k for k in rate if k.startswith("bare")), key=rate.get)
    return {
        "batch": batch,
        "times": times,
        "rate": rate,
        "spread": spread,
        "memory": memory,
        "best_bare": best,
        "passes": {k: steps[k].passes for k in ("with", "without")},
        "policy": steps["with"].policy.describe(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="simclr", choices=sorted(METHOD_SPECS))
    p.add_argument("--batch-size", type=int, nargs="+", default=[128, 256])
    step_args(p)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--mem-steps", type=int, default=2, help="steps per peak-memory measurement")
    p.add_argument("--images", type=int, default=2048, help="images held in memory (at least 2 batches)")
    p.add_argument("--data", help="data set name or image folder, e.g. a CIFAR-10 folder (default: random pixels)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: width 8, 16 px, batch 16, 2 repeats of 2 steps")
    args = p.parse_args()
    if args.quick:
        args.width, args.image_size, args.batch_size, args.images = 8, 16, [16], 64
        args.repeats, args.steps, args.warmup, args.mem_steps = 2, 2, 1, 1
    device = resolve_device(args.device)
    results = [measure(args, b, device) for b in args.batch_size]

    print(f"**Machine:** {machine(device)}  ")
    print(f"**Model:** {args.base}, {args.backbone} width {args.width}, {args.image_size} px, "
          f"{args.data or 'random pixels'}; median of {args.repeats} repeats × {args.steps} steps"
          f"{' (--quick: not a measurement)' if args.quick else ''}\n")  # fmt: skip
    print(f"(a) engine step ({results[0]['policy']}) vs the bare encoder forward+backward of the best precision "
          "and memory format (img/s = images through the encoder)\n")  # fmt: skip
    print("| batch | " + " | ".join(f"bare {p} {f}" for p, f in POLICIES) + " | engine w/o module (2 passes) | ratio "
          "| engine with module (3 passes) | ratio |")  # fmt: skip
    print("|---:|" + "---:|" * (len(POLICIES) + 4))
    for r in results:
        best = r["rate"][r["best_bare"]]
        bare = " | ".join(f"{r['rate'][f'bare {p} {f}']:,.0f}" for p, f in POLICIES)
        print(f"| {r['batch']} | {bare} | {r['rate']['without']:,.0f} | {r['rate']['without'] / best:.2f} | "
              f"{r['rate']['with']:,.0f} | {r['rate']['with'] / best:.2f} |")  # fmt: skip
    print("\n(c) the affine module's cost (engine step with vs without it)\n")
    print("| batch | step ms with | step ms without | time ratio (goal ≤ 1.5) | peak MiB with | peak MiB without "
          "| memory ratio (goal ≤ 1.55) | memory measured as |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        t_with, t_without = (1e3 * statistics.median(r["times"][k]) for k in ("with", "without"))
        (m_with, how), (m_without, _) = r["memory"]["with"], r["memory"]["without"]
        ratio = f"{m_with / m_without:.2f}" if m_without > 0 else "n/a"
        print(f"| {r['batch']} | {t_with:.1f} | {t_without:.1f} | {t_with / t_without:.2f} | {m_with:,.1f} | "
              f"{m_without:,.1f} | {ratio} | {how} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(device), "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
