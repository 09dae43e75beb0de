"""Feature-extraction rate of `affssl eval` vs the backbone's bare forward rate, same machine, same run.

    python benchmarks/eval_speed.py --data /tmp/cifar10 --n 4096          # ResNet-18, width 64, CIFAR stem, 32 px
    python benchmarks/eval_speed.py --arch resnet50 --size 64 --no-cifar-stem --n 1024

"bare forward" times only `backbone(x)` on float batches prepared beforehand (eval mode, inference_mode,
channels_last, as extraction runs it); "extraction" times `affssl.eval.features.extract` from the uint8
images in memory: slicing, the device copy, the cast to float in [0, 1], the forward and the gather into
one (N, F) tensor. The goal is extraction ≥ 0.9 × bare. Repeats alternate the two so that load from other
processes hits both alike; the table shows medians. Prints a markdown table. Not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from affssl.backbones import build_backbone
from affssl.data import load_dataset
from affssl.eval.features import extract, resolve_device
from affssl.spec import BackboneSpec, DataSpec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(backbone: torch.nn.Module, batches: list[torch.Tensor], device: torch.device) -> float:
    """Seconds for backbone(x) over prepared float batches."""
    _sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            backbone(x)
    _sync(device)
    return time.perf_counter() - t


def extraction(backbone: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    extract(backbone, images, batch_size, device)
    _sync(device)
    return time.perf_counter() - t


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
        f"{gpu}; load average {load}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="data set name or image folder (default: random images)")
    p.add_argument("--n", type=int, default=4096, help="images to run")
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="image side in px")
    p.add_argument("--cifar-stem", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    device = resolve_device(args.device)
    if args.data:
        images = load_dataset(DataSpec(dataset=args.data, image_size_px=args.size)).train.images[: args.n]
    else:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.n, 3, args.size, args.size), dtype=torch.uint8, generator=gen)
    stem = args.cifar_stem if args.cifar_stem is not None else args.size <= 64
    spec = BackboneSpec(name=args.arch, width=args.width, cifar_stem=stem)
    backbone = build_backbone(spec).eval().to(device, memory_format=torch.channels_last)
    batches = [
        (x.to(device).float() / 255).contiguous(memory_format=torch.channels_last)
        for x in images.split(args.batch_size)
    ]
    batches_nchw = [x.contiguous() for x in batches]
    n = len(images)

    bare_forward(backbone, batches[:2], device)  # warm-up (allocator, kernels)
    extraction(backbone, images[: 2 * args.batch_size], args.batch_size, device)
    times: dict[str, list[float]] = {"bare": [], "bare_nchw": [], "extract": []}
    for _ in range(args.repeats):
        times["bare"].append(bare_forward(backbone, batches, device))
        times["extract"].append(extraction(backbone, images, args.batch_size, device))
        times["bare_nchw"].append(bare_forward(backbone, batches_nchw, device))
    rate = {k: n / statistics.median(v) for k, v in times.items()}

    print(f"**Machine:** {machine(device)}  ")
    print(
        f"**Model:** {args.arch}, width {args.width}, {'CIFAR' if stem else 'ImageNet'} stem, {args.size} px, "
        f"batch {args.batch_size}, {n} images ({args.data or 'random'}), device {device}, "
        f"median of {args.repeats} repeats\n"
    )
    print("| measurement | img/s (median) | min–max img/s | ratio to bare |")
    print("|---|---:|---:|---:|")
    for key, label in (
        ("bare", "bare forward (channels_last)"),
        ("extract", "feature extraction (affssl)"),
        ("bare_nchw", "bare forward (NCHW, reference)"),
    ):
        lo, hi = n / max(times[key]), n / min(times[key])
        print(f"| {label} | {rate[key]:,.0f} | {lo:,.0f}–{hi:,.0f} | {rate[key] / rate['bare']:.2f} |")


if __name__ == "__main__":
    main()
