"""Shared by throughput.py and peer_pipeline.py: machine line, timing, the engine's step, peak memory."""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from affssl import hostmem, precision
from affssl.data import batches, load_dataset
from affssl.engine import resolve_device
from affssl.learner import Learner
from affssl.optim import build_optimizer, lr_at
from affssl.spec import METHOD_SPECS, DataSpec, RunSpec, load_spec
from affssl.streams import generator, objective_generators

__all__ = [
    "EngineStep",
    "images",
    "machine",
    "peak_memory",
    "resolve_device",
    "run_spec",
    "seconds",
    "step_args",
    "study_step_args",
    "sync",
]


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
            f"{gpu}, device {device}; load average {load}")  # fmt: skip


def step_args(p: argparse.ArgumentParser) -> None:
    """The options throughput.py and peer_pipeline.py share: model, device and timing."""
    p.add_argument("--backbone", default="resnet18", help="any name --backbone takes")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="steps per timed repeat")


def study_step_args(p: argparse.ArgumentParser) -> None:
    """The CPU study's step (SimCLR + affine, ResNet-18 w16, 16 px, batch 256): profile_step.py, jobs_speed.py."""
    p.add_argument("--base", default="simclr", choices=sorted(METHOD_SPECS))
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--affine", action=argparse.BooleanOptionalAction, default=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], n: int, device: torch.device) -> float:
    """Wall seconds for n calls of fn, the device synchronised before and after."""
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return time.perf_counter() - t


def run_spec(base: str, batch: int, size: int, backbone: str, width: int, device: str, affine: bool) -> RunSpec:
    return load_spec("default", [f"method.name={base}", f"train.batch_size={batch}", f"data.image_size_px={size}",
                                 f"backbone.name={backbone}", f"backbone.width={width}", f"train.device={device}",
                                 f"affine.enabled={str(affine).lower()}"])  # fmt: skip


def images(data: str | None, n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) uint8: the first n train images of a data set / image folder, or random pixels."""
    if data:
        return load_dataset(DataSpec(dataset=data, image_size_px=size)).train.images[:n]
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


class EngineStep:
    """One training step as `affssl.engine.pretrain` runs it in one process, on uint8 images in memory.

    Mirrors the loop body: batch of indices from a seeded permutation, lr, bf16 autocast (CUDA,
    train.amp), Learner forward (views, encoder passes, method loss, affine term), zero_grad,
    backward, optimizer step (fused on CUDA), the method's after_step; channels_last on CUDA;
    on CPU the engine's host-memory setting (affssl.hostmem).
    """

    def __init__(self, spec: RunSpec, pixels: torch.Tensor, device: torch.device):
        torch.manual_seed(spec.train.seed)
        if device.type == "cpu":  # as the engine does; process-wide, so the bare and peer steps gain too
            hostmem.keep_freed_memory()
        self.spec, self.device, self.images = spec, device, pixels.to(device)
        self.policy = precision.resolve(spec.train.precision, spec.train.memory_format, device)
        self.learner = Learner(spec).to(device, memory_format=self.policy.memory_format)
        params = [p for p in self.learner.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, spec.optim, fused=device.type == "cuda")
        self.model = torch.compile(self.learner) if spec.train.compile else self.learner
        seed = spec.train.seed
        self.g_order, self.g_views = (generator(seed, k, 0, device) for k in ("order", "views"))
        self.g_objectives = objective_generators(seed, 0, device)  # affine, rotation, care: each its own stream
        self.g_affine = self.g_objectives["affine"]
        self.order, self.step = iter(()), 0
        self.passes = 2 + (spec.affine.views if spec.affine.enabled else 0)  # online encoder passes per image

    def __call__(self) -> None:
        index = next(self.order, None)
        if index is None:
            self.order = batches(self.images.shape[0], self.spec.train.batch_size, self.g_order)
            index = next(self.order)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, 10**6, 100, self.spec.optim)
        with self.policy.autocast():
            loss, _ = self.model(self.images[index], self.g_views, self.g_objectives)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.learner.method.after_step(self.learner.backbone, self.step / 10**6)
        self.step += 1


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def peak_memory(fn: Callable[[], object], n: int, device: torch.device) -> tuple[float, str]:
    """(MiB, method): the peak memory of n calls of fn above what was in use just before them.

    CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats (tensors only, not the
    allocator's cache). CPU (Linux): peak resident set size, VmHWM of /proc/self/status after
    resetting it with `echo 5 > /proc/self/clear_refs`, with glibc's free memory handed back first
    (malloc_trim) so that reused pages count; elsewhere getrusage's lifetime ru_maxrss (approximate).
    """
    gc.collect()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(n):
            fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda max_memory_allocated"
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = _rss_kib("VmRSS")
        for _ in range(n):
            fn()
        return (_rss_kib("VmHWM") - base) / 1024, "peak RSS (VmHWM reset via clear_refs)"
    except OSError:
        import resource

        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(n):
            fn()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, "ru_maxrss growth (lifetime peak)"
