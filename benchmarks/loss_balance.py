"""The measurement behind each base's default affine weight λ (affssl/spec/methods.py): at initialisation,
the base loss ÷ the affine MSE, and the ratio of their gradient norms on the backbone. Not a test.

    python benchmarks/loss_balance.py --base dino                        # the digits preset, batch 128, 3 seeds
    python benchmarks/loss_balance.py --base simclr --set augment.local_crops=6

Each seed builds the run's Learner (the `default` preset plus --set overrides), draws one batch of
--batch-size images and its views, and back-propagates the base loss and the affine loss (λ = 1)
separately; the gradient norm is over every backbone parameter. Means over the seeds.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from affssl import augment
from affssl.data import load_dataset
from affssl.learner import Learner
from affssl.spec import load_spec


def balance(base: str, overrides: list[str], seed: int, batch_size: int) -> tuple[float, float, float, float]:
    """(base loss, affine loss, base gradient norm, affine gradient norm) at init for one seed."""
    spec = load_spec("default", [f"method.name={base}", f"train.seed={seed}", *overrides])
    torch.manual_seed(seed)
    learner = Learner(spec)
    learner.start_epoch(0)
    images = load_dataset(spec.data, seed=seed, progress=False).train.images
    x = images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:batch_size]]
    g = torch.Generator().manual_seed(seed)
    v1, v2 = augment.views(x, spec.augment, g)
    h1, h2 = learner.backbone(v1), learner.backbone(v2)
    local = learner.backbone(augment.local_views(x, spec.augment, g)) if spec.augment.local_crops else None
    out = learner.method(h1, h2, v1, v2) if local is None else learner.method(h1, h2, v1, v2, local)
    affine = learner.head(learner.backbone, v1, h1, torch.Generator().manual_seed(seed + 1))
    norms = []
    for loss in (out.loss, affine):
        grads = torch.autograd.grad(loss, list(learner.backbone.parameters()), retain_graph=True, allow_unused=True)
        norms.append(torch.sqrt(sum((gr**2).sum() for gr in grads if gr is not None)).item())
    return out.loss.item(), affine.item(), *norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="dino")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="spec override a.b=c")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    rows = [balance(args.base, args.overrides, s, args.batch_size) for s in range(args.seeds)]
    base, affine, g_base, g_affine = (statistics.mean(col) for col in zip(*rows, strict=True))
    print(f"{args.base} {' '.join(args.overrides)}: base loss {base:.3g}, affine MSE {affine:.3g}, loss ratio "
          f"{base / affine:.3g}, gradient-norm ratio {g_base / g_affine:.3g} (mean of {args.seeds} seeds)")  # fmt: skip


if __name__ == "__main__":
    main()
