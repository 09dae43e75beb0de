"""affssl's training step against a pipeline built the way peer libraries build it. Not a test.

    python benchmarks/peer_pipeline.py                      # SimCLR, ResNet-18 w64, 32 px, batch 256, random pixels
    python benchmarks/peer_pipeline.py --data /tmp/cifar10  # ImageFolder of CIFAR-10 JPEGs (train/ if present)
    python benchmarks/peer_pipeline.py --quick              # seconds-long smoke run (tiny model)

peer: the recipe as solo-learn (without DALI) and lightly document it for CIFAR: torchvision's
    ResNet-18 (`torchvision.models.resnet18(weights=None)`, CIFAR stem, fc removed) in channels_last
    memory format and fp32, `torchvision.datasets.ImageFolder` (with --data; otherwise an in-memory list
    of PIL images) with per-sample torchvision transforms — RandomResizedCrop, horizontal flip,
    ColorJitter with p = 0.8, RandomGrayscale, GaussianBlur, ToTensor — making two views per image in
    DataLoader workers (--workers, default 2); then encoder on both views, SimCLR projector and
    NT-Xent, backward, Adam step.
affssl: the engine's step (`_common.EngineStep`) on uint8 images in memory, views made in
    batches on the training device, under the engine's precision policy (`train.precision` auto:
    bf16 autocast on this CPU when it has AVX512-BF16, channels_last).
Both sides use the same initial weights, batch, augmentation parameters (affssl's AugmentSpec),
projector, loss and optimizer, and by default leave the affine module OFF on both sides (--affine:
ON on both, the peer side calling `affssl.AffineEstimation` on its views).

img/s = source images per second (each gives two views, so two encoder passes, on both sides).
ratio = affssl / peer. Repeats alternate the two; medians. The peer's workers are started before
each of its timed phases and stopped after it, so they never compete with the affssl phase; its
prefetch queue may hold a few batches when timing starts (in the peer's favour). `--json PATH`
also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torchvision.transforms as T
from _common import EngineStep, images, machine, resolve_device, run_spec, seconds, step_args
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.datasets import ImageFolder

from affssl.augment import blur_kernel_px
from affssl.backbones import torchvision_model
from affssl.optim import build_optimizer
from affssl.spec import AugmentSpec


def peer_transform(spec: AugmentSpec, size: int) -> T.Compose:
    """The per-sample torchvision pipeline with affssl's augmentation parameters."""
    ops = [T.RandomResizedCrop(size, scale=spec.crop_scale, ratio=spec.crop_ratio), T.RandomHorizontalFlip(spec.flip_p),
           T.RandomApply([T.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)], p=spec.jitter_p),
           T.RandomGrayscale(spec.grayscale_p)]  # fmt: skip
    kernel = blur_kernel_px(size, spec.blur_kernel_frac)
    if kernel >= 3:  # as affssl: no blur below a 3-px kernel
        ops.append(T.RandomApply([T.GaussianBlur(kernel, sigma=spec.blur_sigma)], p=spec.blur_p[0]))
    return T.Compose([*ops, T.ToTensor()])


class TwoViews:
    def __init__(self, transform: T.Compose):
        self.transform = transform

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(img), self.transform(img)


class PILImages(Dataset):
    def __init__(self, pixels: torch.Tensor, transform: TwoViews):
        self.items = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in pixels]  # (H, W, 3) uint8 each
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.transform(self.items[i]), 0


class PeerStep:
    """One step of the peer recipe: next batch of two views from the workers, then an fp32 channels_last step."""

    def __init__(self, engine: EngineStep, loader: DataLoader):
        spec, device = engine.spec, engine.device
        torch.manual_seed(spec.train.seed)
        self.backbone = torchvision_model(spec.backbone, spec.data.image_size_px)  # fc = Identity
        self.backbone.load_state_dict(engine.learner.backbone.state_dict())  # the same initial weights
        self.backbone = self.backbone.to(device, memory_format=torch.channels_last)
        self.method, self.head = engine.learner.method, engine.learner.head  # projector + NT-Xent (+ module)
        params = [*self.backbone.parameters(), *self.method.parameters()]
        params += list(self.head.parameters()) if self.head is not None else []
        self.optimizer = build_optimizer(params, spec.optim, fused=device.type == "cuda")
        self.spec, self.device, self.g_affine = spec, device, engine.g_affine
        self.loader, self.it = loader, None

    def start(self, warm: int) -> None:
        self.it = iter(self.loader)
        for _ in range(warm):
            next(self.it)

    def stop(self) -> None:
        self.it = None  # shuts the workers down

    def __call__(self) -> None:
        (v1, v2), _ = next(self.it)
        v1, v2 = (v.to(self.device, memory_format=torch.channels_last, non_blocking=True) for v in (v1, v2))
        h1, h2 = self.backbone(v1), self.backbone(v2)  # fp32, as the peers' CPU recipe
        loss = self.method(h1, h2, v1, v2).loss
        if self.head is not None:
            loss = loss + self.spec.affine.weight * self.head(self.backbone, v1, h1, self.g_affine)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=256)
    step_args(p)
    p.add_argument("--affine", action="store_true", help="the affine module on both sides (default: off on both)")
    p.add_argument("--workers", type=int, default=2, help="peer DataLoader workers")
    p.add_argument("--images", type=int, default=4096, help="images in memory (random pixels only)")
    p.add_argument("--data", help="image folder (class sub-folders; train/ used if present), e.g. CIFAR-10 JPEGs")
    p.add_argument("--quick", action="store_true", help="smoke run: width 64, 16 px, batch 16, 2 repeats of 3 steps")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.image_size, args.batch_size, args.images, args.repeats, args.steps = 16, 16, 128, 2, 3
    device = resolve_device(args.device)
    spec = run_spec("simclr", args.batch_size, args.image_size, args.backbone, args.width, device.type, args.affine)
    two_views = TwoViews(peer_transform(spec.augment, args.image_size))
    if args.data:
        root = Path(args.data) / "train" if (Path(args.data) / "train").is_dir() else Path(args.data)
        dataset: Dataset = ImageFolder(str(root), transform=two_views)
        pixels = images(args.data, args.images, args.image_size)
    else:
        pixels = images(None, args.images, args.image_size)
        dataset = PILImages(pixels, two_views)
    sampler = RandomSampler(dataset, replacement=True, num_samples=args.batch_size * 10**6)  # never runs out
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        drop_last=True, pin_memory=device.type == "cuda")  # fmt: skip
    affssl_step = EngineStep(spec, pixels, device)
    peer = PeerStep(EngineStep(spec, pixels[: args.batch_size], device), loader)  # its own weights (same init)

    seconds(affssl_step, 2, device)  # warm-up
    times: dict[str, list[float]] = {"peer": [], "affssl": []}
    for _ in range(args.repeats):
        peer.start(warm=max(1, args.workers))
        times["peer"].append(seconds(peer, args.steps, device) / args.steps)
        peer.stop()
        times["affssl"].append(seconds(affssl_step, args.steps, device) / args.steps)
    rate = {k: args.batch_size / statistics.median(v) for k, v in times.items()}

    print(f"**Machine:** {machine(device)}  ")
    print(f"**Setting:** SimCLR {'with' if args.affine else 'without'} the affine module on both sides, "
          f"{args.backbone} width {args.width}, {args.image_size} px, batch {args.batch_size}, "
          f"{args.data or 'random pixels'}, peer DataLoader workers {args.workers}; median of {args.repeats} "
          f"repeats × {args.steps} steps{' (--quick: not a measurement)' if args.quick else ''}\n")  # fmt: skip
    print("| pipeline | img/s (median) | min–max img/s | step ms |")
    print("|---|---:|---:|---:|")
    labels = {"peer": "peer: ImageFolder/PIL + per-sample torchvision in workers", "affssl": "affssl engine step"}
    for key, label in labels.items():
        lo, hi = args.batch_size / max(times[key]), args.batch_size / min(times[key])
        print(f"| {label} | {rate[key]:,.0f} | {lo:,.0f}–{hi:,.0f} | {1e3 * statistics.median(times[key]):.1f} |")
    print(
        f"\n**ratio affssl / peer:** {rate['affssl'] / rate['peer']:.2f} (affssl: {affssl_step.policy.describe()}; "
        "peer: fp32, channels_last)"
    )
    if args.json:
        record = {"machine": machine(device), "batch": args.batch_size, "backbone": args.backbone, "width": args.width,
                  "image_size_px": args.image_size, "affine": args.affine, "workers": args.workers,
                  "policy": affssl_step.policy.describe(), "img_per_s": rate, "step_s": times,
                  "ratio": rate["affssl"] / rate["peer"]}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
