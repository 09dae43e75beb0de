"""Numeric precision and memory format per device (design decision 11), chosen by measurement.

`train.precision = "auto"` is bf16 autocast where the hardware computes bf16 natively (every CUDA
device affssl targets; x86 CPUs with AVX512-BF16 or AMX-BF16, read from /proc/cpuinfo) and fp32
elsewhere; "fp32" and "bf16" force it. `train.memory_format = "auto"` is channels_last on every
device: on the 2-core AVX512-BF16 EPYC here a ResNet-18 (CIFAR stem) step is faster in
channels_last than in NCHW in both precisions (README "Performance" has the figures and command),
and on a 2-core AVX2 EPYC in fp32 too (ResNet-18 width 16, 16 px, batch 256: 205 against 292 ms a step).
One exception, for training in fp32 on a CPU: torch 2.14's weight gradient of a 1×1, stride-2 convolution
in channels_last with fewer than 8 input channels writes past its buffer on AVX2 CPUs (heap corruption,
the process aborts; forward passes and bf16 are unaffected). A model with such a layer (a ResNet narrower
than width 8: its downsampling shortcut) trains contiguous under "auto"; asking for channels_last is an error.

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
from torch import nn

from affssl.errors import UserError

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


def narrow_strided_pointwise_convs(model: nn.Module) -> list[str]:
    """Names of the 1×1, strided convolutions with fewer than 8 input channels (the CPU fp32 bug above)."""
    convs = ((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    return [name for name, m in convs if m.kernel_size == (1, 1) and m.stride != (1, 1) and m.in_channels < 8]


def resolve(precision: str, memory_format: str, device: torch.device, trained: nn.Module | None = None) -> Policy:
    """The policy for a spec's `train.precision` / `train.memory_format` on a device (trained: the model a run
    will train, checked against the CPU fp32 channels_last bug above)."""
    if precision == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        precision = "bf16" if native else "fp32"
    fmt = torch.contiguous_format if memory_format == "contiguous" else torch.channels_last
    unsafe: list[str] = []
    if trained is not None and device.type == "cpu" and precision == "fp32":
        unsafe = narrow_strided_pointwise_convs(trained)
    if fmt == torch.channels_last and unsafe:
        if memory_format == "channels_last":
            raise UserError(
                f"train.memory_format = channels_last cannot train {unsafe[0]} (a 1×1 strided convolution with "
                "fewer than 8 input channels) in fp32 on a CPU: torch's kernel corrupts memory there; "
                "set train.memory_format=auto or contiguous, or backbone.width ≥ 8"
            )
        fmt = torch.contiguous_format
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
