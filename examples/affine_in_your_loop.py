"""The paper's affine module in your own training loop: plain PyTorch SimCLR on sklearn's digits.

Nothing here is affssl's engine: your encoder (torchvision's ResNet-18), your augmentations, your
loss, your optimizer. The lines marked `# + affine` are all the module takes; delete them and the
script is plain SimCLR. About a minute on 2 CPU cores:

    python examples/affine_in_your_loop.py              # --steps 40 --batch-size 64 by default
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torchvision
from sklearn.datasets import load_digits
from torch import Tensor, nn

from affssl import AffineEstimation  # + affine


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's loss: each of the 2N embeddings must pick its pair among the other 2N − 1."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    logits = z @ z.T / temperature  # (2N, 2N)
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    pairs = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # (2N,)
    return F.cross_entropy(logits, pairs)


def augment(x: Tensor) -> Tensor:
    """A random view of a batch (B, 3, S, S) in [0, 1]: crop-and-resize, then brightness and contrast."""
    b = x.shape[0]
    side = 0.6 + 0.4 * torch.rand(b, device=x.device)  # (B,) crop side as a fraction of the image
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = (1 - side)[:, None] * (2 * torch.rand(b, 2, device=x.device) - 1)  # crop centre
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    contrast, brightness = 0.6 + 0.8 * torch.rand(2, b, 1, 1, 1, device=x.device)  # (B, 1, 1, 1) each
    mean = x.mean((1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (((x - mean) * contrast + mean) * brightness).clamp(0, 1)


def digits(size_px: int) -> Tensor:
    """sklearn's 1,797 digits (8×8, values 0–16) as (N, 3, size_px, size_px) floats in [0, 1]."""
    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16  # (N, 1, 8, 8)
    return F.interpolate(x, size=size_px, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)


def resnet18_small_images() -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem (3×3 conv, no max-pool) and no classifier: → (B, 512)."""
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool, model.fc = nn.Identity(), nn.Identity()
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size-px", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    images = digits(args.size_px).to(args.device)
    encoder = resnet18_small_images().to(args.device)
    projector = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128)).to(args.device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *projector.parameters()], lr=1e-3)
    aff = AffineEstimation(feat_dim=512).to(args.device)  # + affine
    optimizer.add_param_group({"params": aff.parameters()})  # + affine

    for step in range(1, args.steps + 1):
        x = images[torch.randint(len(images), (args.batch_size,), device=args.device)]  # (B, 3, S, S)
        v1, v2 = augment(x), augment(x)
        h1, h2 = encoder(v1), encoder(v2)  # (B, 512) each
        losses = {"ssl": nt_xent(projector(h1), projector(h2))}
        losses["affine"] = aff(encoder, v1, h1)  # + affine   (λ = 1, the paper's for SimCLR)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step:3d}  loss {loss.item():.4f}  " + "  ".join(f"{k} {v.item():.4f}" for k, v in losses.items()))


if __name__ == "__main__":
    main()
