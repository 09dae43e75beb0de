"""Where one engine step's time goes: views, encoder passes, projector + loss, the affine module, backward,
optimizer, EMA, and what is left (Python and loop overhead). Not a test.

    python benchmarks/profile_step.py                                   # SimCLR + affine, ResNet-18 w16, 16 px, b256
    python benchmarks/profile_step.py --width 64 --image-size 32 --batch-size 128 --no-affine

Each stage is timed on its own (the device synchronised around it) with the engine's own pieces —
`augment.views`, the Learner's backbone, method and affine block, `loss.backward()`, the optimizer
and `after_step` — under the engine's precision policy, in the order the Learner runs them. The
whole step is then timed as the engine runs it (`_common.EngineStep`); "overhead" is the whole step
minus the stages. Medians over --repeats steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import EngineStep, images, machine, resolve_device, run_spec, seconds, study_step_args, sync

from affssl import augment


def stage_times(e: EngineStep) -> dict[str, float]:
    """One step split into stages, seconds each."""
    learner, spec, device = e.learner, e.spec, e.device
    times: dict[str, float] = {}

    def timed(name: str, fn):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        return out

    x = e.images[: spec.train.batch_size]
    with e.policy.autocast():
        v1, v2 = timed("views (2, batched)", lambda: augment.views(x, spec.augment, e.g_views))
        h1, h2 = timed("encoder forward v1, v2", lambda: (learner.backbone(v1), learner.backbone(v2)))
        out = timed("projector + SSL loss", lambda: learner.method(h1, h2, v1, v2))
        loss = out.loss
        if learner.head is not None:
            block = learner.head
            loss = loss + timed("affine module (warp, 3rd pass, head, MSE)",
                                lambda: block(learner.backbone, v1, h1, e.g_affine))  # fmt: skip
    e.optimizer.zero_grad(set_to_none=True)
    timed("backward", loss.backward)
    timed("optimizer step", e.optimizer.step)
    timed("after_step (EMA)", lambda: learner.method.after_step(learner.backbone, 0.5))
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    study_step_args(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    device = resolve_device(args.device)
    spec = run_spec(args.base, args.batch_size, args.image_size, args.backbone, args.width, device.type, args.affine)
    e = EngineStep(spec, images(None, 2 * args.batch_size, args.image_size), device)
    for _ in range(2):  # warm-up
        stage_times(e)
        e()
    split = [stage_times(e) for _ in range(args.repeats)]
    whole = [seconds(e, 1, device) for _ in range(args.repeats)]
    median = {k: statistics.median(s[k] for s in split) for k in split[0]}
    step = statistics.median(whole)
    median["overhead (step − stages)"] = step - sum(median.values())

    print(f"**Machine:** {machine(device)}  ")
    print(f"**Step:** {args.base}{' + affine' if args.affine else ''}, {args.backbone} width {args.width}, "
          f"{args.image_size} px, batch {args.batch_size}, {e.policy.describe()}; "
          f"median of {args.repeats}\n")  # fmt: skip
    print("| stage | ms | share of the step |")
    print("|---|---:|---:|")
    for name, s in median.items():
        print(f"| {name} | {1e3 * s:.1f} | {100 * s / step:.1f} % |")
    print(f"| **whole step (engine)** | **{1e3 * step:.1f}** | 100 % |")


if __name__ == "__main__":
    main()
