"""A guard against a CPU kernel bug: bf16 weight gradients of strided, padded convolutions on tiny inputs.

On the CPU (torch 2.14.1, oneDNN 3.12, AVX512-BF16), under bf16 autocast, the weight gradient of a
strided, zero-padded convolution whose input is smaller than its stride along a padded axis (a 1×1
input to a stride-2 3×3 convolution with padding 1, a 2×2 input to a stride-3 one) leaves kernel
taps unwritten: they hold whatever the allocator handed out, zeros in a fresh process, anything
later (3.7e13 with MALLOC_PERTURB_=165). Dense and grouped convolutions are hit in both layouts,
depthwise ones in channels_last; fp32 is exact, and so is every input at least as large as the
stride. The condition was mapped by comparing the gradient's bits under three malloc fill values
(none, 165, 90) for kernels 1–7, strides 1–4, paddings 0–k, inputs 1–6 px, 4–64 channels, batches
2–8 and 1–2 threads: every case that differed lies inside the rule of `meets_bug` (it also takes
some harmless cases, e.g. a 3×3 with padding 2; running those in fp32 costs nothing that matters).

Before training, `probe` runs the encoder once per crop size the run uses (eval mode, no gradient,
one image) and records each convolution's input size; under train.precision = auto the layers that
meet the rule run in fp32 (`guard`: autocast off inside them, their input cast to fp32), the rest
stays bf16. `check_torch` tells whether a torch build still has the bug: `python -m affssl.convguard`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from dataclasses import dataclass

import torch
from torch import nn

from affssl.errors import UserError
from affssl.precision import fp32

_MINIMAL = """
import hashlib, torch
torch.manual_seed(0)
conv = torch.nn.Conv2d(64, 64, 3, stride=2, padding=1)
x = torch.randn(32, 64, 1, 1)  # (B, C, 1, 1): the input smaller than the stride
with torch.autocast("cpu", torch.bfloat16):
    y = conv(x)
y.float().sum().backward()
ref = torch.nn.Conv2d(64, 64, 3, stride=2, padding=1)
ref.load_state_dict(conv.state_dict())
ref(x.bfloat16().float()).sum().backward()  # the same bf16 input; fp32 arithmetic
err = (conv.weight.grad - ref.weight.grad).abs().max().item()
print(hashlib.sha256(conv.weight.grad.numpy().tobytes()).hexdigest()[:16], err)
"""
FILLS = ("", "165", "90")  # MALLOC_PERTURB_ values: glibc's own behaviour, then two fill bytes


@dataclass(frozen=True)
class Finding:
    """A convolution that meets the bug: its dotted name, input size (H, W) px and the crop size that gives it."""

    name: str
    input_px: tuple[int, int]
    crop_px: int

    def describe(self) -> str:
        return f"{self.name} (input {self.input_px[0]}×{self.input_px[1]} at {self.crop_px} px crops)"


def meets_bug(conv: nn.Conv2d, input_px: tuple[int, int]) -> bool:
    """True where the bf16 weight gradient may leave taps unwritten: along some axis, stride > input and padding > 0."""
    if conv.padding_mode != "zeros":  # other modes pad the input first and convolve without padding
        return False
    padding = conv._reversed_padding_repeated_twice[::-2]  # (pad H, pad W), also for padding="same"
    return any(s > n and p > 0 for s, n, p in zip(conv.stride, input_px, padding, strict=True))


def probe(encoder: nn.Module, crop_sizes: list[int], channels: int = 3, prefix: str = "") -> list[Finding]:
    """The convolutions of `encoder` that meet the bug at any of `crop_sizes` (one no-grad forward pass per size).

    Names are dotted from the model that holds the encoder at `prefix` (e.g. "backbone")."""
    device = next(encoder.parameters()).device
    names = {m: ".".join(p for p in (prefix, n) if p) for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d)}
    found: dict[str, Finding] = {}
    seen: list[tuple[nn.Conv2d, tuple[int, int], int]] = []
    size = [0]
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m, tuple(args[0].shape[-2:]), size[0])))
             for m in names]  # fmt: skip
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            for s in crop_sizes:
                size[0] = s
                try:
                    encoder(torch.zeros(1, channels, s, s, device=device))  # (1, C, S, S)
                except RuntimeError as err:  # e.g. a kernel larger than what is left of the image
                    raise UserError(f"the encoder cannot take {s} px crops ({str(err).splitlines()[0]}); "
                                    "raise data.image_size_px") from None  # fmt: skip
    finally:
        for h in hooks:
            h.remove()
        encoder.train(was_training)
    for m, input_px, s in seen:
        if meets_bug(m, input_px) and names[m] not in found:
            found[names[m]] = Finding(names[m], input_px, s)
    return list(found.values())


def guard(model: nn.Module, findings: list[Finding]) -> None:
    """Run each found convolution of `model` in fp32 (autocast off inside it, its input cast to fp32)."""
    for f in findings:
        conv = model.get_submodule(f.name)
        conv.forward = types.MethodType(_fp32_forward, conv)  # a bound method: deepcopy rebinds it to the copy


def _fp32_forward(self: nn.Module, *args, **kwargs):
    return fp32(type(self).forward)(self, *args, **kwargs)


def protect(model: nn.Module, encoder_name: str, crop_sizes: list[int], precision: str, autocast_dtype,
            device: torch.device, channels: int = 3) -> list[Finding]:  # fmt: skip
    """Probe `model.<encoder_name>` on a CPU bf16 run and guard what meets the bug; forced bf16 there is an error.

    Returns the guarded convolutions (empty off the CPU, in fp32, or when none meets the bug).
    """
    if device.type != "cpu" or autocast_dtype != torch.bfloat16:
        return []
    findings = probe(model.get_submodule(encoder_name), crop_sizes, channels, prefix=encoder_name)
    if findings and precision == "bf16":
        raise UserError(
            f"train.precision = bf16 cannot train {findings[0].describe()} on a CPU: torch's bf16 weight gradient of "
            "a strided, padded convolution on an input smaller than its stride leaves taps unwritten (garbage "
            "gradients); set train.precision=auto (runs such layers in fp32) or fp32, or raise data.image_size_px"
        )
    guard(model, findings)
    return findings


def check_torch(fills: tuple[str, ...] = FILLS, timeout_s: float = 120) -> tuple[bool, list[str]]:
    """(True when this torch has the bug, one line per fill): the minimal case in a subprocess per malloc fill."""
    lines = []
    for fill in fills:
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"}
        env |= {"MALLOC_PERTURB_": fill} if fill else {}
        done = subprocess.run([sys.executable, "-c", _MINIMAL], env=env, capture_output=True, text=True,
                              timeout=timeout_s, check=True)  # fmt: skip
        lines.append(done.stdout.strip())
    digests = {line.split()[0] for line in lines}
    errors = [float(line.split()[1]) for line in lines]
    return len(digests) > 1 or max(errors) > 1e-3, lines


if __name__ == "__main__":
    bug, lines = check_torch()
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for fill, line in zip(FILLS, lines, strict=True):
        digest, err = line.split()
        print(f"MALLOC_PERTURB_={fill or '(unset)':8} weight-gradient digest {digest}, max |bf16 − fp32| {err}")
    print("bf16 conv weight-gradient bug: PRESENT (keep the guard)" if bug else "bf16 conv weight-gradient bug: absent")
    sys.exit(1 if bug else 0)
