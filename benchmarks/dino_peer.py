"""DINO with multi-crop: affssl's training step against DINO's own data recipe, side by side. Not a test.

    python benchmarks/dino_peer.py                            # ResNet-18 w16, 16 px (locals 9 px), 2 + 6 crops
    python benchmarks/dino_peer.py --width 64 --image-size 32  # solo-learn's CIFAR shapes: 32 px, locals 18 px
    python benchmarks/dino_peer.py --data /work/cifar10        # ImageFolder of JPEGs (train/ if present)
    python benchmarks/dino_peer.py --quick                     # seconds-long smoke run

peer: the data path as DINO's documentation (facebookresearch/dino, main_dino.py) builds it:
    `torchvision.datasets.ImageFolder` (with --data; otherwise an in-memory list of PIL images) whose
    transform makes every crop of a sample with per-sample PIL/torchvision transforms (DataAugmentationDINO:
    two global crops, each RandomResizedCrop → flip → ColorJitter p 0.8 → grayscale → its blur / solarize
    probability, and N local crops at the local size and scale), in DataLoader workers (--workers, default 2),
    batches of lists of crops; then the student on the global crops and on every local crop at once (its
    MultiCropWrapper's one forward per resolution), the teacher on the global crops, DINO's loss, backward,
    optimizer step, EMA update of the teacher. fp32, channels_last (peer CPU recipes).
affssl: the engine's step (`_common.EngineStep`) on uint8 images in memory: global and local views made in
    batches on the training device (one batched pass per crop size), under the engine's precision policy
    (bf16 autocast on a CPU with AVX512-BF16, channels_last).
Both sides: the same DINO model and loss (affssl.methods.dino: student, EMA teacher, prototypes, centring),
the same initial weights, batch, crop counts, sizes and augmentation parameters (affssl's AugmentSpec),
optimizer (the spec's Adam), and the affine module off. method.freeze_last_layer_epochs is 0 on both sides
(the steady-state step: the first epoch's frozen prototypes only skip one small update).

img/s = source images per second (each gives 2 global + N local crops on both sides). ratio = affssl / peer.
Repeats alternate the two; medians. The peer's workers start before each of its timed phases (and prefetch a
few batches, in its favour) and stop after it, so they never compete with the affssl phase.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torchvision.transforms as T
from _common import EngineStep, images, machine, resolve_device, seconds, step_args
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.datasets import ImageFolder

from affssl.augment import SOLARIZE_THRESHOLD, blur_kernel_px
from affssl.backbones import build_backbone
from affssl.optim import build_optimizer
from affssl.spec import AugmentSpec, RunSpec, load_spec


class Solarize:
    """PIL solarization above affssl's threshold (DINO's utils.Solarization), applied with probability p."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img, threshold=round(255 * SOLARIZE_THRESHOLD)) if torch.rand(()) < self.p else img


def crop_transform(spec: AugmentSpec, size: int, scale: tuple[float, float], blur_p: float, solarize_p: float):
    """One crop as DataAugmentationDINO makes it, with affssl's parameters for that crop."""
    ops = [T.RandomResizedCrop(size, scale=scale, ratio=spec.crop_ratio), T.RandomHorizontalFlip(spec.flip_p),
           T.RandomApply([T.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)], p=spec.jitter_p),
           T.RandomGrayscale(spec.grayscale_p)]  # fmt: skip
    kernel = blur_kernel_px(size, spec.blur_kernel_frac)
    if kernel >= 3 and blur_p > 0:  # as affssl: no blur below a 3-px kernel
        ops.append(T.RandomApply([T.GaussianBlur(kernel, sigma=spec.blur_sigma)], p=blur_p))
    if solarize_p > 0:
        ops.append(Solarize(solarize_p))
    return T.Compose([*ops, T.ToTensor()])


class MultiCrop:
    """PIL image → [global 1, global 2, local 1, …, local N] tensors (DataAugmentationDINO's list of crops)."""

    def __init__(self, spec: AugmentSpec, size: int):
        a = spec
        self.globals = [crop_transform(a, size, a.crop_scale, a.blur_p[i], a.solarize_p[i]) for i in (0, 1)]
        self.local = crop_transform(a, a.local_size_px, a.local_crop_scale, a.local_blur_p, a.local_solarize_p)
        self.n_local = a.local_crops

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        return [t(img) for t in self.globals] + [self.local(img) for _ in range(self.n_local)]


class PILImages(Dataset):
    def __init__(self, pixels: torch.Tensor, transform: MultiCrop):
        self.items = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in pixels]  # (H, W, 3) uint8 each
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.transform(self.items[i]), 0


class PeerStep:
    """One step of the peer recipe: the next batch of crops from the workers, then an fp32 DINO step."""

    def __init__(self, engine: EngineStep, loader: DataLoader):
        spec, device = engine.spec, engine.device
        torch.manual_seed(spec.train.seed)
        self.backbone = build_backbone(spec.backbone, spec.data.image_size_px)  # the engine's encoder
        self.backbone.load_state_dict(engine.learner.backbone.state_dict())  # the same initial weights
        self.backbone = self.backbone.to(device, memory_format=torch.channels_last)
        self.method = engine.learner.method  # DINO: student head, teacher, centre, loss (its own copy)
        params = [p for p in [*self.backbone.parameters(), *self.method.parameters()] if p.requires_grad]
        self.optimizer = build_optimizer(params, spec.optim, fused=device.type == "cuda")
        self.device, self.loader, self.it, self.step = device, loader, None, 0

    def start(self, warm: int) -> None:
        self.it = iter(self.loader)
        for _ in range(warm):
            next(self.it)

    def stop(self) -> None:
        self.it = None  # shuts the workers down

    def __call__(self) -> None:
        crops, _ = next(self.it)  # [global 1, global 2, local 1, …]: (B, C, s, s) each
        crops = [c.to(self.device, memory_format=torch.channels_last, non_blocking=True) for c in crops]
        v1, v2 = crops[0], crops[1]
        h1, h2 = self.backbone(v1), self.backbone(v2)  # (B, F) each, fp32
        local = self.backbone(torch.cat(crops[2:])) if len(crops) > 2 else None  # (N·B, F): one pass, as DINO's
        loss = self.method(h1, h2, v1, v2, local).loss  # MultiCropWrapper per resolution
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.method.after_step(self.backbone, self.step / 10**6)
        self.step += 1


def dino_spec(args: argparse.Namespace, device: str) -> RunSpec:
    return load_spec(args.spec, ["method.name=dino", f"train.batch_size={args.batch_size}",
                                 f"data.image_size_px={args.image_size}", f"backbone.name={args.backbone}",
                                 f"backbone.width={args.width}", f"train.device={device}", "affine.enabled=false",
                                 f"augment.local_crops={args.local_crops}", "method.freeze_last_layer_epochs=0",
                                 *args.set])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="examples/cifar10_cpu_v2.toml", help="spec file or preset (augmentation, optim)")
    p.add_argument("--batch-size", type=int, default=256)
    step_args(p)
    p.set_defaults(width=16, image_size=16)
    p.add_argument("--local-crops", type=int, default=6)
    p.add_argument("--workers", type=int, default=2, help="peer DataLoader workers")
    p.add_argument("--images", type=int, default=4096, help="images in memory (random pixels only)")
    p.add_argument("--data", help="image folder (class sub-folders; train/ used if present), e.g. CIFAR-10 JPEGs")
    p.add_argument("--set", action="append", default=[], help="override a spec field: a.b=c")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 16, 2 repeats of 2 steps")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.batch_size, args.images, args.repeats, args.steps = 16, 128, 2, 2
    device = resolve_device(args.device)
    spec = dino_spec(args, device.type)
    crops = MultiCrop(spec.augment, args.image_size)
    if args.data:
        root = Path(args.data) / "train" if (Path(args.data) / "train").is_dir() else Path(args.data)
        dataset: Dataset = ImageFolder(str(root), transform=crops)
        pixels = images(args.data, args.images, args.image_size)
    else:
        pixels = images(None, args.images, args.image_size)
        dataset = PILImages(pixels, crops)
    sampler = RandomSampler(dataset, replacement=True, num_samples=args.batch_size * 10**6)  # never runs out
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        drop_last=True, pin_memory=device.type == "cuda")  # fmt: skip
    affssl_step = EngineStep(spec, pixels, device)
    peer = PeerStep(EngineStep(spec, pixels[: args.batch_size], device), loader)  # its own model (same init)

    seconds(affssl_step, 2, device)  # warm-up
    times: dict[str, list[float]] = {"peer": [], "affssl": []}
    for _ in range(args.repeats):
        peer.start(warm=max(1, args.workers))
        times["peer"].append(seconds(peer, args.steps, device) / args.steps)
        peer.stop()
        times["affssl"].append(seconds(affssl_step, args.steps, device) / args.steps)
    rate = {k: args.batch_size / statistics.median(v) for k, v in times.items()}

    a = spec.augment
    setting = (f"DINO, 2 × {args.image_size} px + {a.local_crops} × {a.local_size_px} px crops, {args.backbone} "
               f"width {args.width}, batch {args.batch_size}, {args.data or 'random pixels'}, peer DataLoader "
               f"workers {args.workers}; median of {args.repeats} repeats × {args.steps} steps"
               f"{' (--quick: not a measurement)' if args.quick else ''}")  # fmt: skip
    print(f"**Machine:** {machine(device)}  ")
    print(f"**Setting:** {setting}\n")
    print("| pipeline | img/s (median) | min–max img/s | step ms |")
    print("|---|---:|---:|---:|")
    labels = {"peer": "peer: PIL + per-sample torchvision crops in workers (DINO's recipe)",
              "affssl": "affssl engine step (batched crops on the device)"}  # fmt: skip
    for key, label in labels.items():
        lo, hi = args.batch_size / max(times[key]), args.batch_size / min(times[key])
        print(f"| {label} | {rate[key]:,.0f} | {lo:,.0f}–{hi:,.0f} | {1e3 * statistics.median(times[key]):.1f} |")
    print(f"\n**ratio affssl / peer:** {rate['affssl'] / rate['peer']:.2f} (affssl: {affssl_step.policy.describe()}; "
          "peer: fp32, channels_last)")  # fmt: skip
    if args.json:
        record = {"machine": machine(device), "setting": setting, "batch": args.batch_size, "backbone": args.backbone,
                  "width": args.width, "image_size_px": args.image_size, "local_crops": a.local_crops,
                  "local_size_px": a.local_size_px, "workers": args.workers, "policy": affssl_step.policy.describe(),
                  "img_per_s": rate, "step_s": times, "ratio": rate["affssl"] / rate["peer"]}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
