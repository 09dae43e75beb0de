"""The augmentation's pixel operations on a whole batch, with per-sample parameters: ColorJitter's brightness,
contrast and saturation blends and hue rotation (in a per-sample order), grayscale, Gaussian blur, solarize.

Each op takes float images (B, C, H, W) in [0, 1] and per-sample parameter tensors, and matches
`torchvision.transforms.v2.functional` applied image by image (tests/test_augment.py checks each one against it).
affssl.augment draws the parameters and calls these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2 weights, as torchvision's rgb_to_grayscale


def color_jitter(x: Tensor, apply: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """ColorJitter on the samples where apply (B,): op k uses factors[:, k] and the ops run in each row of order.

    Brightness, contrast and saturation are all blends toward a target (black, mean grey, grey image), so a sample's
    order is: up to three blends, hue, the remaining blends. That is six cheap blend rounds and one hue pass for the
    whole batch instead of four of each.
    """
    hue_at = (order == 3).int().argmax(1)  # (B,) position of hue in each order
    rank = torch.arange(4, device=order.device) + 4 * (order == 3)  # (B, 4) sorts hue last
    blends = order.gather(1, rank.argsort(1)[:, :3])  # (B, 3) the blend ops, in order
    for s in range(3):
        x = _blend_step(x, blends[:, s], factors, apply & (s < hue_at))
    hue = apply & (factors[:, 3] != 0)  # (B,)
    x = torch.where(hue[:, None, None, None], adjust_hue(x, factors[:, 3]), x)
    for s in range(3):
        x = _blend_step(x, blends[:, s], factors, apply & (s >= hue_at))
    return x


def _blend_step(x: Tensor, op: Tensor, factors: Tensor, active: Tensor) -> Tensor:
    """Brightness (op 0), contrast (1) or saturation (2) per sample where active (B,); the others keep x exactly."""
    ratio = torch.where(active, factors.gather(1, op[:, None]).squeeze(1), 1.0)  # (B,); x·1 + target·0 = x
    grey = _luma(x)  # (B, 1, H, W)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True) * (op == 1)[:, None, None, None]  # (B, 1, 1, 1); black if op 0
    return _blend(x, torch.where((op == 2)[:, None, None, None], grey, mean), ratio)


def _luma(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)  # (B, H, W) each
    return (r * LUMA[0] + g * LUMA[1] + b * LUMA[2]).unsqueeze(1)  # (B, 1, H, W)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """torchvision's float blend: factor·x + (1 − factor)·other, clamped to [0, 1]."""
    f = factor[:, None, None, None]  # (B, 1, 1, 1)
    return (x * f + other * (1 - f)).clamp_(0, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return (x * factor[:, None, None, None]).clamp_(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(x, _luma(x).mean(dim=(1, 2, 3), keepdim=True), factor)  # blend with the mean grey level


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(x, _luma(x), factor)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue by factor (turns, in [−0.5, 0.5]) through RGB → HSV → RGB."""
    r, g, b = x.unbind(1)  # (B, H, W) each
    v = x.amax(1)  # (B, H, W) HSV value
    chroma = v - x.amin(1)  # (B, H, W) = v·s
    # hue in sixths of a turn, measured from the largest channel; grey pixels (chroma 0) get 0 and keep any hue
    hue6 = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * chroma, r - g + 4 * chroma))
    hue6 = hue6.div_(torch.where(chroma > 0, chroma, 1.0)).add_(6 * factor[:, None, None])
    # HSV → RGB: channel n ∈ (5, 3, 1) for (R, G, B) is v − v·s·clamp(min(k, 4 − k), 0, 1), k = (n + 6·h) mod 6
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype)[None, :, None, None]  # (1, 3, 1, 1): 5, 3, 1
    k = torch.remainder(n + hue6[:, None], 6)  # (B, 3, H, W)
    return v[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp_(0, 1)


def grayscale(x: Tensor) -> Tensor:
    return _luma(x).expand_as(x)  # (B, 3, H, W), the luma in every channel


def gaussian_blur(x: Tensor, sigma_px: Tensor, kernel_px: int) -> Tensor:
    """Separable Gaussian blur with per-sample sigma_px (B,), odd kernel_px taps, reflect padding (as torchvision)."""
    B, C, H, W = x.shape
    pad_px = kernel_px // 2
    offset_px = torch.arange(kernel_px, device=x.device, dtype=x.dtype) - pad_px  # (k,)
    kernel = torch.exp(-0.5 * (offset_px / sigma_px[:, None]) ** 2)  # (B, k)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B·C, k), one per channel
    y = F.pad(x, (pad_px,) * 4, mode="reflect").reshape(1, B * C, H + 2 * pad_px, W + 2 * pad_px)
    y = F.conv2d(y, kernel[:, None, :, None], groups=B * C)  # (1, B·C, H, W + 2·pad) rows blurred
    y = F.conv2d(y, kernel[:, None, None, :], groups=B * C)  # (1, B·C, H, W)
    return y.view(B, C, H, W)


def solarize(x: Tensor, threshold: float) -> Tensor:
    return torch.where(x >= threshold, 1 - x, x)
