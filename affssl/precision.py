"""Numeric precision and memory format per device (design decision 11), chosen by measurement.

`train.precision = "auto"` is bf16 autocast where the hardware computes bf16 natively (every CUDA
device affssl targets; x86 CPUs with AVX512-BF16 or AMX-BF16, read from /proc/cpuinfo) and fp32
elsewhere; "fp32" and "bf16" force it. `train.memory_format = "auto"` is channels_last on every
device: on the 2-core AVX512-BF16 EPYC here a ResNet-18 (CIFAR stem) step is faster in
channels_last than in NCHW in both precisions (README "Performance" has the figures and command).

Under autocast only the encoder's, projectors' and heads' matrix work runs in bf16. These stay
fp32 on purpose, each by its own `@fp32` decorator (so any caller, the drop-in block included,
gets them right): the batched views and the affine warp (sampling coordinates in bf16 would move
pixels), the affine targets and their MSE, the NT-Xent logits, BYOL's cosines, the Barlow Twins
cross-correlation. BatchNorm keeps fp32 weights and statistics (autocast never casts them), and
the parameters, their gradients and the optimizer moments are fp32 tensors throughout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)
_LOW = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Policy:
    """What a run uses on its device: the autocast dtype (None: fp32) and the activations' memory format."""

    device_type: str
    dtype: torch.dtype | None
    memory_format: torch.memory_format

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        fmt = "channels_last" if self.memory_format == torch.channels_last else "contiguous"
        return f"{self.name}, {fmt}"


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on CPUs with bf16 dot-product instructions (AVX512-BF16 or AMX-BF16); False where unknown."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve(precision: str, memory_format: str, device: torch.device) -> Policy:
    """The policy for a spec's `train.precision` / `train.memory_format` on a device."""
    if precision == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        precision = "bf16" if native else "fp32"
    fmt = torch.contiguous_format if memory_format == "contiguous" else torch.channels_last
    return Policy(device.type, torch.bfloat16 if precision == "bf16" else None, fmt)


def fp32(fn: F) -> F:
    """Run fn with autocast off and its bf16/fp16 tensor arguments cast to float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")):
            return fn(*args, **kwargs)  # the common fp32 path pays one check
        args = tuple(a.float() if torch.is_tensor(a) and a.dtype in _LOW else a for a in args)
        kwargs = {k: v.float() if torch.is_tensor(v) and v.dtype in _LOW else v for k, v in kwargs.items()}
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
