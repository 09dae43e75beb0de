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
few batches, in its favour) and stop after it, so they never compete with the affssl phase. The peer's data
path (per-sample crops, workers), the timing and the table are peer_pipeline.py's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _common import EngineStep, machine, resolve_device, step_args
from peer_pipeline import Workers, compare, crop_transform, report, worker_args
from PIL import Image

from affssl.backbones import build_backbone
from affssl.optim import build_optimizer
from affssl.spec import AugmentSpec, RunSpec, load_spec


class MultiCrop:
    """PIL image → [global 1, global 2, local 1, …, local N] tensors (DataAugmentationDINO's list of crops)."""

    def __init__(self, spec: AugmentSpec, size: int):
        a = spec
        self.globals = [crop_transform(a, size, a.crop_scale, a.blur_p[i], a.solarize_p[i]) for i in (0, 1)]
        self.local = crop_transform(a, a.local_size_px, a.local_crop_scale, a.local_blur_p, a.local_solarize_p)
        self.n_local = a.local_crops

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        return [t(img) for t in self.globals] + [self.local(img) for _ in range(self.n_local)]


class PeerStep:
    """One step of the peer recipe: the next batch of crops from the workers, then an fp32 DINO step."""

    def __init__(self, engine: EngineStep, workers: Workers):
        spec, device = engine.spec, engine.device
        torch.manual_seed(spec.train.seed)
        self.backbone = build_backbone(spec.backbone, spec.data.image_size_px)  # the engine's encoder
        self.backbone.load_state_dict(engine.learner.backbone.state_dict())  # the same initial weights
        self.backbone = self.backbone.to(device, memory_format=torch.channels_last)
        self.method = engine.learner.method  # DINO: student head, teacher, centre, loss (its own copy)
        params = [p for p in [*self.backbone.parameters(), *self.method.parameters()] if p.requires_grad]
        self.optimizer = build_optimizer(params, spec.optim, fused=device.type == "cuda")
        self.device, self.workers, self.step = device, workers, 0

    def __call__(self) -> None:
        crops, _ = self.workers.next()  # [global 1, global 2, local 1, …]: (B, C, s, s) each
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
    worker_args(p)
    p.add_argument("--set", action="append", default=[], help="override a spec field: a.b=c")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 16, 2 repeats of 2 steps")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.batch_size, args.images, args.repeats, args.steps = 16, 128, 2, 2
    device = resolve_device(args.device)
    spec = dino_spec(args, device.type)
    workers = Workers(args, MultiCrop(spec.augment, args.image_size), device)
    affssl_step = EngineStep(spec, workers.pixels, device)
    peer = PeerStep(EngineStep(spec, workers.pixels[: args.batch_size], device), workers)  # its own model (same init)
    times, rate = compare(peer, workers, affssl_step, args, device)

    a = spec.augment
    setting = (f"DINO, 2 × {args.image_size} px + {a.local_crops} × {a.local_size_px} px crops, {args.backbone} "
               f"width {args.width}, batch {args.batch_size}, {args.data or 'random pixels'}, peer DataLoader "
               f"workers {args.workers}; median of {args.repeats} repeats × {args.steps} steps"
               f"{' (--quick: not a measurement)' if args.quick else ''}")  # fmt: skip
    labels = {"peer": "peer: PIL + per-sample torchvision crops in workers (DINO's recipe)",
              "affssl": "affssl engine step (batched crops on the device)"}  # fmt: skip
    report(device, setting, labels, times, rate, args.batch_size, affssl_step.policy.describe())
    if args.json:
        record = {"machine": machine(device), "setting": setting, "batch": args.batch_size, "backbone": args.backbone,
                  "width": args.width, "image_size_px": args.image_size, "local_crops": a.local_crops,
                  "local_size_px": a.local_size_px, "workers": args.workers, "policy": affssl_step.policy.describe(),
                  "img_per_s": rate, "step_s": times, "ratio": rate["affssl"] / rate["peer"]}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
