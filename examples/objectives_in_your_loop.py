"""AugSelf, rotation prediction (E-SSL) and CARE in your own training loop: plain PyTorch SimCLR on sklearn's digits.

Nothing here is affssl's engine: your encoder (torchvision's ResNet-18), your projector, your loss, your optimizer;
the views come from affssl's batched augmentation, which also returns each view's parameters (AugSelf regresses
their differences). Each objective takes four lines, marked by a comment that starts with + and its name (augself,
rotation, care); delete an objective's lines and the loop runs without it, delete all three and it is plain
SimCLR. λ: each paper's for SimCLR (AugSelf 1 per type, E-SSL 0.4 on a small third view turned four ways, CARE
0.03). About a minute on 2 CPU cores:

    python examples/objectives_in_your_loop.py          # --steps 20 --batch-size 64 by default
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torchvision
from sklearn.datasets import load_digits
from torch import Tensor, nn

from affssl import augment
from affssl.objectives.augself import AugSelf, augself_targets  # + augself
from affssl.objectives.care import CARE, shared_views  # + care
from affssl.objectives.rotation import RotationPrediction, small_views  # + rotation
from affssl.spec import AugmentSpec


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's loss: each of the 2N embeddings must pick its pair among the other 2N − 1."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    logits = z @ z.T / temperature  # (2N, 2N)
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    pairs = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # (2N,)
    return F.cross_entropy(logits, pairs)


def digits(size_px: int) -> Tensor:
    """sklearn's 1,797 digits (8×8, values 0–16) as (N, 3, size_px, size_px) uint8 images."""
    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16  # (N, 1, 8, 8)
    x = F.interpolate(x, size=size_px, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return (x * 255).round().to(torch.uint8)


def resnet18_small_images() -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem (3×3 conv, no max-pool) and no classifier: → (B, 512)."""
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool, model.fc = nn.Identity(), nn.Identity()
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size-px", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    S = args.size_px
    torch.manual_seed(0)
    gen = torch.Generator(args.device).manual_seed(0)  # the views' (and CARE's shared draws') random numbers
    aug = AugmentSpec(blur_p=(0.0, 0.0))  # SimCLR's crop, flip, colour jitter and grayscale; no blur at this size
    images = digits(S).to(args.device)
    encoder = resnet18_small_images().to(args.device)
    projector = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128)).to(args.device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *projector.parameters()], lr=1e-3)
    augself = AugSelf(feat_dim=512).to(args.device)  # + augself
    optimizer.add_param_group({"params": augself.parameters()})  # + augself
    rotation = RotationPrediction(feat_dim=512).to(args.device)  # + rotation
    optimizer.add_param_group({"params": rotation.parameters()})  # + rotation
    care = CARE()  # + care   (no parameters)

    for step in range(1, args.steps + 1):
        x = images[torch.randint(len(images), (args.batch_size,), device=args.device)]  # (B, 3, S, S) uint8
        v1, v2, p1, p2 = augment.views_with_params(x, aug, gen)  # (B, 3, S, S) float each, and their parameters
        h1, h2 = encoder(v1), encoder(v2)  # (B, 512) each
        losses = {"ssl": nt_xent(projector(h1), projector(h2))}
        losses["augself"] = augself(h1, h2, augself_targets(p1, p2, aug))  # + augself   (λ = 1, the paper's)
        losses["rotation"] = 0.4 * rotation(encoder, small_views(x, rotation.spec, aug, gen, S))  # + rotation
        c1, c2 = shared_views(x, aug, 16, gen, S)  # + care   two more views, one draw per chunk (16 chunks)
        losses["care"] = 0.03 * care(projector(encoder(c1)), projector(encoder(c2)))  # + care   (λ SimCLR, CIFAR)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step:3d}  loss {loss.item():.4f}  " + "  ".join(f"{k} {v.item():.4f}" for k, v in losses.items()))


if __name__ == "__main__":
    main()
