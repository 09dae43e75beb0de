"""Random-resized crops from whole stored images of any size, for a batch at once (the chunks storage).

The tensor storage keeps a square centre crop at the training size, so its crop box is drawn in
that square (affssl.augment.crop_boxes). The chunks storage keeps each image whole (short side
data.store_px, aspect kept); here the box is drawn in each image's own height and width, by the
rules of torchvision.transforms.v2.RandomResizedCrop.make_params:

    up to 10 tries: area = H·W·U(scale), aspect = exp(U(log ratio)), w = round(√(area·aspect)),
    h = round(√(area/aspect)); the first try with 0 < w ≤ W and 0 < h ≤ H is kept, at a uniform
    integer offset; with none, the centre crop of the whole image clamped to the ratio range.

The draws are made for the whole batch first, in the order and number augment.crop_boxes makes
them ((n, 10) areas, (n, 10) aspects, (n, 2) offsets), so the view pipeline after the crop consumes
the same generator stream whichever storage feeds it. The box arithmetic is float64 from the
float32 draws, as torchvision computes it in Python floats.

Images of a batch differ in size, so they travel as one zero-padded (B, 3, H_max, W_max) uint8
tensor plus their (B, 2) sizes; the boxes stay inside each image, so the padding is never sampled
(augment.resized_crop_flip clamps to the box's edge pixel centres). Before padding, an image whose
short side is above `cap_px` (the chunk reader passes CAP_FACTOR × the training size) is resized
(antialiased) to it, aspect kept: one 6000 × 6000 px image among CIFAR's padded its whole batch to
6000 px (6.9 GB uint8, 27.6 GB once float). The cap costs no crop its resolution: a crop covers at
least scale[0] = 8 % of the area, so at 4 × S its side is ≥ 1.1 × S px, still shrunk to S.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

ATTEMPTS = 10  # RandomResizedCrop's tries before its centre-crop fallback
CAP_FACTOR = 4  # decoded short sides above CAP_FACTOR × the training size are resized to it before padding


class Draws(NamedTuple):
    area_frac: Tensor  # (n, A) float32, U(scale)
    log_aspect: Tensor  # (n, A) float32, U(log ratio)
    offset: Tensor  # (n, 2) float32, U(0, 1): top, left as fractions of the free range


def draw(n: int, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator) -> Draws:
    """The random numbers of n boxes, drawn as augment.crop_boxes draws them (same count, same order)."""
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    area = scale[0] + (scale[1] - scale[0]) * torch.rand((n, ATTEMPTS), generator=gen, device=gen.device)
    log_aspect = lo + (hi - lo) * torch.rand((n, ATTEMPTS), generator=gen, device=gen.device)
    offset = torch.rand(n, 2, generator=gen, device=gen.device)
    return Draws(area, log_aspect, offset)


def boxes_from(draws: Draws, heights: Tensor, widths: Tensor, ratio: tuple[float, float]) -> Tensor:
    """(n,) image heights and widths px → (n, 4) int64 boxes (top, left, height, width) px, per the rules above."""
    H = heights.to(torch.float64)[:, None]  # (n, 1)
    W = widths.to(torch.float64)[:, None]
    area_px = H * W * draws.area_frac.to(torch.float64)  # (n, A)
    aspect = torch.exp(draws.log_aspect).to(torch.float64)  # (n, A) w/h; exp in float32 as torchvision
    w = torch.round(torch.sqrt(area_px * aspect))  # (n, A) px
    h = torch.round(torch.sqrt(area_px / aspect))
    fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)  # (n, A)
    first = fits.int().argmax(1, keepdim=True)  # (n, 1) first fitting try (0 if none)
    found = fits.any(1)  # (n,)
    H, W = H[:, 0], W[:, 0]  # (n,)
    in_ratio = W / H
    # fallback: the whole image, its long side cut to the nearest ratio bound (centred)
    fall_h = torch.where(in_ratio < min(ratio), torch.round(W / min(ratio)), H)  # (n,)
    fall_w = torch.where(in_ratio > max(ratio), torch.round(H * max(ratio)), W)
    h = torch.where(found, h.gather(1, first)[:, 0], fall_h)  # (n,) px
    w = torch.where(found, w.gather(1, first)[:, 0], fall_w)
    u = draws.offset.to(torch.float64)  # (n, 2)
    top = torch.where(found, torch.minimum(torch.floor(u[:, 0] * (H - h + 1)), H - h), torch.floor((H - h) / 2))
    left = torch.where(found, torch.minimum(torch.floor(u[:, 1] * (W - w + 1)), W - w), torch.floor((W - w) / 2))
    return torch.stack([top, left, h, w], 1).long()  # (n, 4)


def crop_boxes(sizes: Tensor, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator) -> Tensor:
    """sizes (n, 2) int64 (height, width) px on gen's device → (n, 4) int64 boxes (top, left, height, width)."""
    return boxes_from(draw(sizes.shape[0], scale, ratio, gen), sizes[:, 0], sizes[:, 1], ratio)


def pad(images: list[Tensor], cap_px: int | None = None) -> tuple[Tensor, Tensor]:
    """(3, h_i, w_i) uint8 images → (B, 3, H_max, W_max) uint8 zero-padded at the bottom right, and sizes (B, 2).

    `cap_px`: a short side above it is resized to it first (antialiased, aspect kept)."""
    if cap_px is not None:
        images = [TF.resize(img, cap_px, antialias=True) if min(img.shape[-2:]) > cap_px else img for img in images]
    sizes = torch.tensor([img.shape[-2:] for img in images], dtype=torch.int64)  # (B, 2)
    h_max, w_max = sizes.amax(0).tolist()
    out = images[0].new_zeros(len(images), 3, h_max, w_max)  # (B, 3, H_max, W_max)
    for i, img in enumerate(images):  # one copy per image: sizes differ, so no single op can place them
        out[i, :, : img.shape[-2], : img.shape[-1]] = img
    return out, sizes.to(out.device)
