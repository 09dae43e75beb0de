"""The linear probe's trials one after another vs in threads: seconds, and that the numbers are the same.

    python benchmarks/probe_speed.py --data data/cifar10                  # the study's probe: 4,000 train images
    python benchmarks/probe_speed.py --data data/cifar10 --ckpt RUN/last.safetensors

Features: of `--ckpt` (a training checkpoint or an export), else of the study's encoder (ResNet-18,
CIFAR stem, width 16) at its initial weights, on `--limit` stratified train images and all test
images at `--size` px. Only `affssl.eval.linear.linear_probe` is timed (5 trials, the paper's C grid,
L-BFGS), with `workers=1` and with its default (one thread per core, at most one per trial); the
repeats alternate the two so that load from other processes hits both alike, and the table shows
medians. Every repeat must give the same trials (C, validation and test accuracy, coefficients)
both ways, or the script fails. Prints a markdown table. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from _common import machine

from affssl.backbones import build_backbone
from affssl.data import load_dataset
from affssl.eval.features import extract, load_backbone, resolve_device
from affssl.eval.linear import LinearResult, linear_probe
from affssl.spec import BackboneSpec, DataSpec


def features(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, F) train and (M, F) test features with their labels."""
    device = resolve_device(args.device)
    data = load_dataset(DataSpec(dataset=args.data, image_size_px=args.size, limit=args.limit))
    if args.ckpt:
        backbone = load_backbone(args.ckpt)
    else:
        torch.manual_seed(0)
        backbone = build_backbone(BackboneSpec(name="resnet18", width=16, cifar_stem=True))
    h_train = extract(backbone, data.train.images, 256, device)
    h_test = extract(backbone, data.test.images, 256, device)
    return h_train, data.train.labels, h_test, data.test.labels


def same(a: LinearResult, b: LinearResult) -> bool:
    return all(
        (x.C, x.val_acc_pct, x.test_acc_pct, x.not_converged) == (y.C, y.val_acc_pct, y.test_acc_pct, y.not_converged)
        and np.array_equal(x.model.coef_, y.model.coef_)
        for x, y in zip(a.trials, b.trials, strict=True)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="data set name or image folder (e.g. data/cifar10)")
    p.add_argument("--ckpt", help="checkpoint or export whose features to probe (default: untrained encoder)")
    p.add_argument("--limit", type=int, default=4000, help="stratified train images (the study's --eval-limit)")
    p.add_argument("--size", type=int, default=16, help="image side in px")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="where features are taken (the probe runs on the CPU)")
    args = p.parse_args()

    h_train, y_train, h_test, y_test = features(args)
    times: dict[str, list[float]] = {"one after another": [], "threads": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        seq = linear_probe(h_train, y_train, h_test, y_test, args.trials, workers=1)
        times["one after another"].append(time.perf_counter() - t)
        t = time.perf_counter()
        par = linear_probe(h_train, y_train, h_test, y_test, args.trials)
        times["threads"].append(time.perf_counter() - t)
        if not same(seq, par):
            sys.exit("threaded trials differ from sequential ones: a bug; do not trust the timing")

    base = statistics.median(times["one after another"])
    print(f"**Machine:** {machine(torch.device('cpu'))}  ")
    print(
        f"**Probe:** {len(h_train)} × {h_train.shape[1]} train features, {len(h_test)} test, {args.trials} trials, "
        f"{args.repeats} repeats; top-1 {seq.mean_pct:.2f} % both ways, identical trials\n"
    )
    print("| trials | workers | median s | speed-up |")
    print("|---|---:|---:|---:|")
    workers = min(args.trials, torch.get_num_threads())
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {1 if name.startswith('one') else workers} | {med:.2f} | {base / med:.2f}× |")


if __name__ == "__main__":
    main()
