"""What each auxiliary objective costs per training step, against the base step and its pass-count bound.

    python benchmarks/objective_cost.py                               # SimCLR, ResNet-18 w64, 32 px, batch 256
    python benchmarks/objective_cost.py --base byol --width 16 --repeats 9

Each variant is the base with one objective on (`--aux NAME`): affine (a third encoder pass over B
warped views: bound 1.5× a base step of two passes), augself (no extra pass: ≈ 1.0×), rotation (4B
small views at half the side, a quarter of the pixels each: ≈ 1.5×), care (two more full passes:
≈ 2×). Steps are the engine's own (`_common.EngineStep`: views, every pass, loss, backward,
optimizer), timed in rounds that visit every variant once, so a busy machine slows all of them
alike; the table gives the median seconds per step over the rounds and each variant's median
ratio to the base step of the same round.
"""

from __future__ import annotations

import argparse
import json
import statistics

from _common import EngineStep, images, machine, resolve_device, run_spec, seconds

from affssl.spec import METHOD_SPECS, build_spec

BOUNDS = {"base": "1", "affine": "1.5", "augself": "≈ 1.0", "rotation": "≈ 1.25–1.5", "care": "≈ 2"}


def variant_step(name: str, args: argparse.Namespace, pixels, device) -> EngineStep:
    """The engine's step with only `name` on (no objective for "base"), the spec validated as --aux makes it."""
    spec = run_spec(args.base, args.batch_size, args.image_size, args.backbone, args.width, device.type, False)
    if name != "base":
        spec = build_spec(json.loads(spec.model_dump_json()), [f"{name}.enabled=true"])
    return EngineStep(spec, pixels, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="simclr", choices=sorted(METHOD_SPECS))
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=5, help="rounds over every variant")
    p.add_argument("--steps", type=int, default=3, help="steps per variant and round")
    args = p.parse_args()
    device = resolve_device(args.device)
    pixels = images(None, 2 * args.batch_size, args.image_size)
    steps = {name: variant_step(name, args, pixels, device) for name in BOUNDS}
    for step in steps.values():  # warm-up: allocator, kernels, the convolution guard's first calls
        step()
        step()
    rounds = [{name: seconds(step, args.steps, device) / args.steps for name, step in steps.items()}
              for _ in range(args.repeats)]  # fmt: skip

    policy = next(iter(steps.values())).policy.describe()
    print(f"**Machine:** {machine(device)}  ")
    print(f"**Step:** {args.base}, {args.backbone} width {args.width}, {args.image_size} px, batch {args.batch_size}, "
          f"{policy}; {args.repeats} rounds of {args.steps} steps per variant, medians\n")  # fmt: skip
    print("| variant | s/step | × base step (median of rounds) | bound from extra encoder passes |")
    print("|---|---:|---:|---:|")
    for name in BOUNDS:
        per_step = statistics.median(r[name] for r in rounds)
        ratio = statistics.median(r[name] / r["base"] for r in rounds)
        print(f"| {name if name == 'base' else '+ ' + name} | {per_step:.3f} | {ratio:.2f} | {BOUNDS[name]} |")


if __name__ == "__main__":
    main()
