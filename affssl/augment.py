"""The base methods' two views (paper §2.3) and multi-crop's local views, built for a whole batch on its device.

Per view: RandomResizedCrop(scale, ratio) → HorizontalFlip(p) → RandomApply(ColorJitter(b, c, s, h), p)
→ RandomGrayscale(p) → GaussianBlur(int(frac·size), σ ~ U(σ_lo, σ_hi)) with p per view → Solarize(0.5) with p
per view. No mean/std normalisation; views are float32 in [0, 1]. Local views (augment.local_crops of them,
SwAV/DINO multi-crop) take the same pipeline at local_size_px with their own crop scale, blur and solarize
probabilities, all of them in one batched pass, drawn after the global views from the same generator.

`views_with_params` also returns what made each view (`ViewParams`: crop box, flip, jitter factors, order and
whether applied, grayscale, blur, solarize) from the very draws its pixels came from, for the objectives that
regress them (AugSelf); `views` returns the pixels alone, from the same draws, so asking changes nothing.

Read top to bottom: `views` and `view` (the pipeline), then the parameter samplers, then the crop. The pixel
ops (jitter, grayscale, blur, solarize) are affssl.pixelops. Randomness comes only from the generator passed in,
which lives on the data's device; there is no per-sample Python loop and no host sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from affssl.data import crops
from affssl.pixelops import color_jitter, gaussian_blur, grayscale, solarize
from affssl.precision import fp32
from affssl.spec import AugmentSpec, Range

CROP_ATTEMPTS = 10  # RandomResizedCrop's tries before its centre-crop fallback
SOLARIZE_THRESHOLD = 0.5


@dataclass(frozen=True)
class ViewParams:
    """What made each view (rows as the views'): the parameters drawn for it and whether each op was applied.

    The crop box is in the source image's pixels: the stored square (tensor storage) or each whole image
    (chunks storage); `box_frac` gives it as fractions of that image, the form AugSelf regresses.
    """

    box_px: Tensor  # (n, 4) int64 top, left, height, width in the source image, px
    source_px: Tensor  # (n, 2) int64 the source image's (height, width) px
    flip: Tensor  # (n,) bool mirrored left-right (after the crop)
    jitter: Tensor  # (n,) bool colour jitter applied
    jitter_factors: Tensor  # (n, 4) brightness, contrast, saturation factors and hue shift (turns), drawn always
    jitter_order: Tensor  # (n, 4) int64 the order of the four ops (0 brightness … 3 hue)
    grayscale: Tensor  # (n,) bool
    blur: Tensor  # (n,) bool Gaussian blur applied
    blur_sigma_px: Tensor  # (n,) the blur's σ, px, drawn always
    solarize: Tensor  # (n,) bool

    @property
    def box_frac(self) -> Tensor:
        """(n, 4) top, left, height, width as fractions of the source image's height and width."""
        return self.box_px / self.source_px.repeat(1, 2)  # (n, 4) float32


@fp32
def views(x: Tensor, spec: AugmentSpec, gen: torch.Generator, sizes: Tensor | None = None,
          size_px: int | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """x: (B, C, H, W) uint8 on the training device (C = 3). Returns two float32 views in [0, 1], each (B, C, S, S).

    Square stored images (the tensor storage): sizes None, S = H. Whole images of several sizes (the chunks
    storage): x zero-padded, sizes (B, 2) int64 each image's (height, width), S = size_px (affssl.data.crops).
    """
    xf = x.float().div_(255)  # (B, C, H, W) in [0, 1]
    return view(xf, spec, gen, 0, sizes, size_px), view(xf, spec, gen, 1, sizes, size_px)


@fp32
def views_with_params(x: Tensor, spec: AugmentSpec, gen: torch.Generator, sizes: Tensor | None = None,
                      size_px: int | None = None) -> tuple[Tensor, Tensor, ViewParams, ViewParams]:  # fmt: skip
    """`views` and each view's parameters: the same pixels from the same draws (v1, v2, params1, params2)."""
    xf = x.float().div_(255)  # (B, C, H, W) in [0, 1]
    (v1, p1), (v2, p2) = (view_params(xf, spec, gen, i, sizes, size_px) for i in (0, 1))
    return v1, v2, p1, p2


@fp32
def local_views(x: Tensor, spec: AugmentSpec, gen: torch.Generator, sizes: Tensor | None = None) -> Tensor:
    """x: (B, C, H, W) uint8 → spec.local_crops local views, (N·B, C, s, s) float32 in [0, 1], s = local_size_px.

    Row c·B + i is local view c of image i. One batched pass for all of them; call it after `views` with the
    same generator (a run without local views draws nothing here, so its global views are unchanged).
    sizes: as for `views` (whole images of several sizes, zero-padded: each image's (height, width)).
    """
    xf = x.float().div_(255)  # (B, C, H, W) in [0, 1]
    size = (spec.local_size_px, spec.local_size_px)
    return crop_view(xf, spec, gen, spec.local_crops, size, spec.local_crop_scale, spec.local_blur_p,
                     spec.local_solarize_p, sizes)  # fmt: skip


def view(x: Tensor, spec: AugmentSpec, gen: torch.Generator, index: int, sizes: Tensor | None = None,
         size_px: int | None = None) -> Tensor:  # fmt: skip
    """One view; x float32 in [0, 1] (B, C, H, W); index 0 or 1 selects blur_p[index] and solarize_p[index]."""
    return view_params(x, spec, gen, index, sizes, size_px)[0]


def view_params(x: Tensor, spec: AugmentSpec, gen: torch.Generator, index: int, sizes: Tensor | None = None,
                size_px: int | None = None) -> tuple[Tensor, ViewParams]:  # fmt: skip
    """`view` and its parameters."""
    size = (x.shape[2], x.shape[3]) if sizes is None else (size_px, size_px)
    return crop_view_params(x, spec, gen, 1, size, spec.crop_scale, spec.blur_p[index], spec.solarize_p[index], sizes)


def crop_view(x: Tensor, spec: AugmentSpec, gen: torch.Generator, copies: int, size: tuple[int, int],
              scale: Range, blur_p: float, solarize_p: float, sizes: Tensor | None = None) -> Tensor:  # fmt: skip
    """`copies` views of each image of x (B, C, H, W) at size (H_out, W_out) → (copies·B, C, H_out, W_out).

    Row c·B + i is view c of image i; crops take `scale` of the area, blur and solarize their own probabilities.
    sizes None: x holds square stored images, boxes drawn in (H, W); else (B, 2) each zero-padded image's own
    (height, width), boxes drawn in it with the same random numbers (affssl.data.crops).
    """
    return crop_view_params(x, spec, gen, copies, size, scale, blur_p, solarize_p, sizes)[0]


def crop_view_params(x: Tensor, spec: AugmentSpec, gen: torch.Generator, copies: int, size: tuple[int, int],
                     scale: Range, blur_p: float, solarize_p: float, sizes: Tensor | None = None,
                     shared: tuple[int, Tensor] | None = None) -> tuple[Tensor, ViewParams]:  # fmt: skip
    """`crop_view` and the views' parameters (free: they are the draws the pixels were made from).

    shared (k, rows): draw k parameter sets only and give view r the set rows[r], (copies·B,) int64 (CARE: one
    draw for every image of a chunk); each box is then made from its set's random numbers in its own image.
    """
    B, _, H, W = x.shape
    n = copies * B
    m, pick = (n, lambda t: t) if shared is None else (shared[0], lambda t: t[shared[1]])
    # Draw everything first, whatever the spec, so switching one op off leaves the others' randomness unchanged.
    if sizes is None:
        boxes = pick(crop_boxes(m, H, W, scale, spec.crop_ratio, gen))  # (n, 4) px
        source_px = boxes.new_empty(n, 2)  # (n, 2), filled on the device (no host copy)
        source_px[:, 0], source_px[:, 1] = H, W
    else:
        source_px = sizes.repeat(copies, 1)  # (n, 2)
        draws = crops.Draws(*map(pick, crops.draw(m, scale, spec.crop_ratio, gen)))
        boxes = crops.boxes_from(draws, source_px[:, 0], source_px[:, 1], spec.crop_ratio)  # (n, 4) px
    flip = pick(_coin(m, spec.flip_p, gen))  # (n,) bool
    jitter = tuple(map(pick, jitter_params(m, spec, gen)))  # apply (n,), factors (n, 4), order (n, 4)
    grey = pick(_coin(m, spec.grayscale_p, gen))  # (n,) bool
    sigma_px = pick(_uniform(m, spec.blur_sigma, gen))  # (n,)
    blur = pick(_coin(m, blur_p, gen))  # (n,) bool
    solar = pick(_coin(m, solarize_p, gen))  # (n,) bool
    kernel_px = blur_kernel_px(size[0], spec.blur_kernel_frac)
    blurs = kernel_px >= 3 and blur_p > 0

    x = resized_crop_flip(x, boxes, flip, size)  # (n, C, H_out, W_out)
    if spec.jitter_p > 0:
        x = color_jitter(x, *jitter)
    if spec.grayscale_p > 0:
        x = torch.where(grey[:, None, None, None], grayscale(x), x)
    if blurs:
        x = torch.where(blur[:, None, None, None], gaussian_blur(x, sigma_px, kernel_px), x)
    if solarize_p > 0:
        x = torch.where(solar[:, None, None, None], solarize(x, SOLARIZE_THRESHOLD), x)
    params = ViewParams(boxes, source_px, flip, jitter[0], jitter[1], jitter[2], grey, blur & blurs, sigma_px, solar)
    return x, params


# ---------------------------------------------------------------------------------------------
# Parameter samplers: per-sample tensors on the generator's device.


def _uniform(shape: int | tuple[int, ...], bounds: tuple[float, float], gen: torch.Generator) -> Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=gen.device)


def _coin(n: int, p: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen, device=gen.device) < p  # (n,) bool


def crop_boxes(
    n: int, height_px: int, width_px: int, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator
) -> Tensor:
    """RandomResizedCrop.get_params for n images at once. Returns (n, 4) int64 boxes (top, left, height, width) px.

    All attempts are drawn at once; each sample keeps its first box that fits, else the centre crop clamped to ratio.
    """
    area_px = height_px * width_px * _uniform((n, CROP_ATTEMPTS), scale, gen)  # (n, A)
    aspect = torch.exp(_uniform((n, CROP_ATTEMPTS), (math.log(ratio[0]), math.log(ratio[1])), gen))  # (n, A) w/h
    w = torch.round(torch.sqrt(area_px * aspect))  # (n, A) px
    h = torch.round(torch.sqrt(area_px / aspect))
    fits = (w > 0) & (w <= width_px) & (h > 0) & (h <= height_px)  # (n, A)
    first = fits.int().argmax(1, keepdim=True)  # (n, 1) index of the first fitting attempt (0 if none)
    found = fits.any(1)  # (n,)
    in_ratio = width_px / height_px
    fall_h, fall_w = height_px, width_px
    if in_ratio < min(ratio):
        fall_h = round(width_px / min(ratio))
    elif in_ratio > max(ratio):
        fall_w = round(height_px * max(ratio))
    h = torch.where(found, h.gather(1, first).squeeze(1), fall_h)  # (n,) px
    w = torch.where(found, w.gather(1, first).squeeze(1), fall_w)
    u = torch.rand(n, 2, generator=gen, device=gen.device)  # (n, 2) → uniform integer offsets
    top = torch.minimum(torch.floor(u[:, 0] * (height_px - h + 1)), height_px - h)
    left = torch.minimum(torch.floor(u[:, 1] * (width_px - w + 1)), width_px - w)
    top = torch.where(found, top, (height_px - fall_h) // 2)
    left = torch.where(found, left, (width_px - fall_w) // 2)
    return torch.stack([top, left, h, w], 1).long()


def jitter_params(n: int, spec: AugmentSpec, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """ColorJitter draws: apply (n,) bool, factors (n, 4) (brightness, contrast, saturation, hue), order (n, 4).

    order[i] is sample i's random permutation of the four ops, as torchvision draws one per call.
    """
    apply = _coin(n, spec.jitter_p, gen)
    bounds = [(max(0.0, 1 - s), 1 + s) for s in (spec.brightness, spec.contrast, spec.saturation)]
    factors = torch.stack([_uniform(n, b, gen) for b in [*bounds, (-spec.hue, spec.hue)]], 1)  # (n, 4)
    order = torch.rand(n, 4, generator=gen, device=gen.device).argsort(1)  # (n, 4)
    return apply, factors, order


def blur_kernel_px(size_px: int, frac: float) -> int:
    """int(frac·size) as the paper, made odd by adding one; below 3 the blur is skipped."""
    k = int(frac * size_px)
    return k + 1 if k % 2 == 0 else k


# ---------------------------------------------------------------------------------------------
# Batched ops. Factors and parameters are per-sample (B,) tensors on x's device.


def resized_crop_flip(x: Tensor, boxes: Tensor, flip: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop (n, 4) boxes (top, left, height, width px), resize to size (H_out, W_out), mirror where flip (n,) bool.

    n = k·B: k crops of each of x's B images, crop c of image i in row c·B + i. One affine_grid + grid_sample
    (bilinear, align_corners=False); with k > 1 each image's k sampling grids are laid side by side, so x is
    never copied. Sampling points are clamped to the box's edge pixel centres, as F.interpolate clamps to the
    crop's border, so each sample equals torchvision's resized_crop(..., BILINEAR, antialias=False) followed
    by hflip where flip is set.
    """
    B, C, H, W = x.shape
    n, k = boxes.shape[0], boxes.shape[0] // B
    top, left, h, w = boxes.to(x.dtype).unbind(1)  # (n,) px each
    sign = 1 - 2 * flip.to(x.dtype)  # (n,) −1 mirrors the output
    zero = torch.zeros_like(h)
    # output normalised u ↦ input normalised (w/W)·u + (2·left + w)/W − 1, likewise for rows
    theta = torch.stack(
        [
            torch.stack([sign * w / W, zero, (2 * left + w) / W - 1], 1),
            torch.stack([zero, h / H, (2 * top + h) / H - 1], 1),
        ],
        1,
    )  # (n, 2, 3)
    grid = F.affine_grid(theta, [n, C, *size], align_corners=False)  # (n, H_out, W_out, 2) as (x, y)
    lo = torch.stack([(2 * left + 1) / W - 1, (2 * top + 1) / H - 1], 1)  # (n, 2) first pixel centre
    hi = torch.stack([(2 * (left + w) - 1) / W - 1, (2 * (top + h) - 1) / H - 1], 1)  # (n, 2) last pixel centre
    grid = grid.clamp(min=lo[:, None, None], max=hi[:, None, None])
    if k == 1:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (n, C, Ho, Wo)
    Ho, Wo = size
    grid = grid.view(k, B, Ho, Wo, 2).permute(1, 2, 0, 3, 4).reshape(B, Ho, k * Wo, 2)  # crops side by side
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B, C, Ho, k·Wo)
    return out.view(B, C, Ho, k, Wo).permute(3, 0, 1, 2, 4).reshape(n, C, Ho, Wo)
