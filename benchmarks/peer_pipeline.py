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
also writes the figures as JSON. dino_peer.py takes its peer data path, timing and table from here.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.transforms as T
from _common import EngineStep, images, machine, resolve_device, run_spec, seconds, step_args
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.datasets import ImageFolder

from affssl.augment import SOLARIZE_THRESHOLD, blur_kernel_px
from affssl.backbones import torchvision_model
from affssl.optim import build_optimizer
from affssl.spec import AugmentSpec

# The peer's data path, shared with dino_peer.py: per-sample PIL/torchvision crops in DataLoader workers.


class Solarize:
    """PIL solarization above affssl's threshold (DINO's utils.Solarization), applied with probability p."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img, threshold=round(255 * SOLARIZE_THRESHOLD)) if torch.rand(()) < self.p else img


def crop_transform(spec: AugmentSpec, size: int, scale: tuple[float, float], blur_p: float, solarize_p: float = 0.0):
    """One crop as the peers make it, per sample with torchvision transforms, with affssl's parameters."""
    ops = [T.RandomResizedCrop(size, scale=scale, ratio=spec.crop_ratio), T.RandomHorizontalFlip(spec.flip_p),
           T.RandomApply([T.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)], p=spec.jitter_p),
           T.RandomGrayscale(spec.grayscale_p)]  # fmt: skip
    kernel = blur_kernel_px(size, spec.blur_kernel_frac)
    if kernel >= 3 and blur_p > 0:  # as affssl: no blur below a 3-px kernel
        ops.append(T.RandomApply([T.GaussianBlur(kernel, sigma=spec.blur_sigma)], p=blur_p))
    if solarize_p > 0:
        ops.append(Solarize(solarize_p))
    return T.Compose([*ops, T.ToTensor()])


class TwoViews:
    """PIL image → two views, each SimCLR's crop with affssl's augmentation parameters."""

    def __init__(self, spec: AugmentSpec, size: int):
        self.transform = crop_transform(spec, size, spec.crop_scale, spec.blur_p[0])

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(img), self.transform(img)


class PILImages(Dataset):
    def __init__(self, pixels: torch.Tensor, transform: Callable):
        self.items = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in pixels]  # (H, W, 3) uint8 each
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.transform(self.items[i]), 0


class Workers:
    """The peer's DataLoader workers, over an ImageFolder (--data) or in-memory PIL images, sampling forever.

    Started before each of the peer's timed phases and stopped after it, so that they never compete
    with the affssl phase. `pixels`: the same images as uint8, for the affssl side.
    """

    def __init__(self, args: argparse.Namespace, transform: Callable, device: torch.device):
        if args.data:
            root = Path(args.data) / "train" if (Path(args.data) / "train").is_dir() else Path(args.data)
            dataset: Dataset = ImageFolder(str(root), transform=transform)
            self.pixels = images(args.data, args.images, args.image_size)
        else:
            self.pixels = images(None, args.images, args.image_size)
            dataset = PILImages(self.pixels, transform)
        sampler = RandomSampler(dataset, replacement=True, num_samples=args.batch_size * 10**6)  # never runs out
        self.loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                                 drop_last=True, pin_memory=device.type == "cuda")  # fmt: skip
        self.it = None

    def start(self, warm: int) -> None:
        self.it = iter(self.loader)
        for _ in range(warm):
            next(self.it)

    def stop(self) -> None:
        self.it = None  # shuts the workers down

    def next(self):
        return next(self.it)


def worker_args(p: argparse.ArgumentParser) -> None:
    """The options of the peer's data path."""
    p.add_argument("--workers", type=int, default=2, help="peer DataLoader workers")
    p.add_argument("--images", type=int, default=4096, help="images in memory (random pixels only)")
    p.add_argument("--data", help="image folder (class sub-folders; train/ used if present), e.g. CIFAR-10 JPEGs")


def compare(peer: Callable[[], None], workers: Workers, ours: EngineStep, args: argparse.Namespace,
            device: torch.device) -> tuple[dict[str, list[float]], dict[str, float]]:  # fmt: skip
    """Seconds per step of each side over repeats that alternate them, and img/s from their medians."""
    seconds(ours, 2, device)  # warm-up
    times: dict[str, list[float]] = {"peer": [], "affssl": []}
    for _ in range(args.repeats):
        workers.start(warm=max(1, args.workers))
        times["peer"].append(seconds(peer, args.steps, device) / args.steps)
        workers.stop()
        times["affssl"].append(seconds(ours, args.steps, device) / args.steps)
    return times, {k: args.batch_size / statistics.median(v) for k, v in times.items()}


def report(device: torch.device, setting: str, labels: dict[str, str], times: dict[str, list[float]],
           rate: dict[str, float], batch: int, policy: str) -> None:  # fmt: skip
    """The machine, the setting, a Markdown table of both sides and their ratio, on stdout."""
    print(f"**Machine:** {machine(device)}  ")
    print(f"**Setting:** {setting}\n")
    print("| pipeline | img/s (median) | min–max img/s | step ms |")
    print("|---|---:|---:|---:|")
    for key, label in labels.items():
        lo, hi = batch / max(times[key]), batch / min(times[key])
        print(f"| {label} | {rate[key]:,.0f} | {lo:,.0f}–{hi:,.0f} | {1e3 * statistics.median(times[key]):.1f} |")
    ratio = rate["affssl"] / rate["peer"]
    print(f"\n**ratio affssl / peer:** {ratio:.2f} (affssl: {policy}; peer: fp32, channels_last)")


class PeerStep:
    """One step of the peer recipe: next batch of two views from the workers, then an fp32 channels_last step."""

    def __init__(self, engine: EngineStep, workers: Workers):
        spec, device = engine.spec, engine.device
        torch.manual_seed(spec.train.seed)
        self.backbone = torchvision_model(spec.backbone, spec.data.image_size_px)  # fc = Identity
        self.backbone.load_state_dict(engine.learner.backbone.state_dict())  # the same initial weights
        self.backbone = self.backbone.to(device, memory_format=torch.channels_last)
        self.method, self.head = engine.learner.method, engine.learner.head  # projector + NT-Xent (+ module)
        params = [*self.backbone.parameters(), *self.method.parameters()]
        params += list(self.head.parameters()) if self.head is not None else []
        self.optimizer = build_optimizer(params, spec.optim, fused=device.type == "cuda")
        self.spec, self.device, self.g_affine, self.workers = spec, device, engine.g_affine, workers

    def __call__(self) -> None:
        (v1, v2), _ = self.workers.next()
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
    worker_args(p)
    p.add_argument("--quick", action="store_true", help="smoke run: width 64, 16 px, batch 16, 2 repeats of 3 steps")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.image_size, args.batch_size, args.images, args.repeats, args.steps = 16, 16, 128, 2, 3
    device = resolve_device(args.device)
    spec = run_spec("simclr", args.batch_size, args.image_size, args.backbone, args.width, device.type, args.affine)
    workers = Workers(args, TwoViews(spec.augment, args.image_size), device)
    affssl_step = EngineStep(spec, workers.pixels, device)
    peer = PeerStep(EngineStep(spec, workers.pixels[: args.batch_size], device), workers)  # its own weights (same init)
    times, rate = compare(peer, workers, affssl_step, args, device)

    setting = (f"SimCLR {'with' if args.affine else 'without'} the affine module on both sides, "
               f"{args.backbone} width {args.width}, {args.image_size} px, batch {args.batch_size}, "
               f"{args.data or 'random pixels'}, peer DataLoader workers {args.workers}; median of {args.repeats} "
               f"repeats × {args.steps} steps{' (--quick: not a measurement)' if args.quick else ''}")  # fmt: skip
    labels = {"peer": "peer: ImageFolder/PIL + per-sample torchvision in workers", "affssl": "affssl engine step"}
    report(device, setting, labels, times, rate, args.batch_size, affssl_step.policy.describe())
    if args.json:
        record = {"machine": machine(device), "batch": args.batch_size, "backbone": args.backbone, "width": args.width,
                  "image_size_px": args.image_size, "affine": args.affine, "workers": args.workers,
                  "policy": affssl_step.policy.describe(), "img_per_s": rate, "step_s": times,
                  "ratio": rate["affssl"] / rate["peer"]}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
