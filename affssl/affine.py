"""The paper's module (Torpey & Klein, arXiv 2402.09071, §1): affine transformation estimation.

Read top to bottom: sample φ per image → warp a batch with one grid_sample (the same map as
`torchvision.transforms.v2.functional.affine`) → encode the regression target → aggregate the
encoder features of the image and its warp → predict φ with a small head → MSE.

φ has six columns per image: (angle_deg, tx_px, ty_px, scale, shear_x_deg, shear_y_deg).
A component that is switched off stays at the identity (0, 0, 0, 1, 0, 0) and leaves the target.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affssl.heads import mlp
from affssl.precision import fp32
from affssl.spec import AffineSpec

PARAM_NAMES = ("angle_deg", "tx_px", "ty_px", "scale", "shear_x_deg", "shear_y_deg")
IDENTITY = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0)
COLUMNS = {"rotation": (0,), "translation": (1, 2), "scale": (3,), "shear": (4, 5)}


def columns(spec: AffineSpec) -> list[int]:
    """The φ columns that enter the target, in φ order."""
    return [c for name in spec.components for c in COLUMNS[name]]


def target_dim(spec: AffineSpec) -> int:
    return len(columns(spec))


# ---------------------------------------------------------------------------------------------
# Sampling (paper §1.3): every parameter independent and uniform per image.


def sample(n: int, spec: AffineSpec, size_px: int, gen: torch.Generator) -> Tensor:
    """Draw φ for n images of size_px × size_px. Returns (n, 6) float32 on gen's device."""
    u = torch.rand(n, 6, generator=gen, device=gen.device)  # (n, 6) in [0, 1)
    phi = torch.tensor(IDENTITY, device=gen.device).repeat(n, 1)  # (n, 6)
    if "rotation" in spec.components:
        phi[:, 0] = (2 * u[:, 0] - 1) * spec.rotation_deg
    if "translation" in spec.components:
        max_px = spec.translate_frac * size_px
        phi[:, 1:3] = torch.round((2 * u[:, 1:3] - 1) * max_px)  # whole pixels, as the paper
    if "scale" in spec.components:
        lo, hi = spec.scale_range
        phi[:, 3] = lo + (hi - lo) * u[:, 3]
    if "shear" in spec.components:
        phi[:, 4:6] = (2 * u[:, 4:6] - 1) * spec.shear_deg
    return phi


# ---------------------------------------------------------------------------------------------
# Warp: the inverse map of torchvision's affine (centre of the image), for the whole batch.


def inverse_matrix(phi: Tensor) -> Tensor:
    """Output pixel → input pixel, in coordinates centred on the image. (n, 6) → (n, 2, 3).

    The same matrix as torchvision's `_get_inverse_affine_matrix` with centre (0, 0):
    M = T·R(θ)·S(σ)·SH(sx, sy), inverted in closed form (det of the rotation-shear part is 1).
    """
    rot, sx, sy = (torch.deg2rad(phi[:, i]) for i in (0, 4, 5))  # (n,) each
    tx, ty, scale = phi[:, 1], phi[:, 2], phi[:, 3]
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m00, m01, m10, m11 = d / scale, -b / scale, -c / scale, a / scale
    m02 = m00 * -tx + m01 * -ty
    m12 = m10 * -tx + m11 * -ty
    return torch.stack([m00, m01, m02, m10, m11, m12], dim=1).view(-1, 2, 3)


def _grid(matrix: Tensor, h: int, w: int) -> Tensor:
    """Sampling grid for grid_sample(align_corners=False) from centred pixel matrices (n, 2, 3)."""
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=matrix.device, dtype=matrix.dtype)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=matrix.device, dtype=matrix.dtype)
    ones = torch.ones(h, w, device=matrix.device, dtype=matrix.dtype)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), ones], -1)  # (H, W, 3) centred pixel coords
    half = torch.tensor([0.5 * w, 0.5 * h], device=matrix.device, dtype=matrix.dtype)
    grid = base.view(1, h * w, 3) @ (matrix.transpose(1, 2) / half)  # (n, h·w, 2)
    return grid.view(-1, h, w, 2)


@fp32
def warp(x: Tensor, phi: Tensor, spec: AffineSpec) -> Tensor:
    """Apply φ to a float batch (B, C, H, W) with black fill, or the bounded crop (paper §3.6)."""
    _, _, h, w = x.shape
    matrix = inverse_matrix(phi.to(torch.float32))  # (B, 2, 3)
    if spec.fill == "bounded":
        matrix = _bounded(matrix, h, w)
    grid = _grid(matrix, h, w)  # (B, H, W, 2)
    out = F.grid_sample(x.float(), grid, mode=spec.interpolation, padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


def _bounded(matrix: Tensor, h: int, w: int, n_centres: int = 9) -> Tensor:
    """Compose the warp with a crop of the largest axis-aligned rectangle of valid pixels, resized back.

    The valid region is the warped image (a parallelogram) clipped to the canvas. A rectangle
    centred at p0 with half-sizes (a, b) fits when, for each of its four slabs
    |n·p0 + c| + |n_x|·a + |n_y|·b ≤ half, i.e. α_k·a + β_k·b ≤ γ_k. The best a·b lies at a
    tangent point of one constraint or a vertex where two meet; all are tried, batched. For a
    parallelogram inside the canvas the best centre is its own centre (central symmetry); when
    it is clipped, centres on the segment from the canvas centre to it are searched.
    """
    n = matrix.shape[0]
    lin, off = matrix[:, :, :2], matrix[:, :, 2]  # (n, 2, 2), (n, 2)
    half = torch.tensor([0.5 * w, 0.5 * h], device=matrix.device)
    centre_far = -torch.linalg.solve(lin, off)  # (n, 2): where the input centre lands
    t = torch.linspace(0, 1, n_centres, device=matrix.device)
    p0 = t[None, :, None] * centre_far[:, None, :]  # (n, K, 2)
    # Constraints α·a + β·b ≤ γ: two slabs of the input frame, two of the canvas. (n, K, 4) each.
    k = n_centres
    alpha = torch.cat([lin[:, None, :, 0].abs().expand(n, k, 2), lin.new_tensor([1.0, 0.0]).expand(n, k, 2)], -1)
    beta = torch.cat([lin[:, None, :, 1].abs().expand(n, k, 2), lin.new_tensor([0.0, 1.0]).expand(n, k, 2)], -1)
    mapped = (lin[:, None] @ p0[..., None]).squeeze(-1) + off[:, None]  # (n, K, 2)
    gamma = torch.cat([half - mapped.abs(), half - p0.abs()], -1) - 1e-4  # (n, K, 4)
    # Candidates: tangent points of each constraint, and pairwise intersections. (n, K, M) each.
    eps = 1e-12
    cand_a = [gamma / (2 * alpha.clamp_min(eps))]
    cand_b = [gamma / (2 * beta.clamp_min(eps))]
    for i in range(4):
        for j in range(i + 1, 4):
            det = alpha[..., i] * beta[..., j] - alpha[..., j] * beta[..., i]
            ok = det.abs() > eps
            safe = torch.where(ok, det, torch.ones_like(det))
            cand_a.append(((gamma[..., i] * beta[..., j] - gamma[..., j] * beta[..., i]) / safe)[..., None])
            cand_b.append(((alpha[..., i] * gamma[..., j] - alpha[..., j] * gamma[..., i]) / safe)[..., None])
    ca, cb = torch.cat(cand_a, -1), torch.cat(cand_b, -1)  # (n, K, 10)
    ca = ca.clamp(0, float(w))
    cb = cb.clamp(0, float(h))
    load = alpha[..., None, :] * ca[..., None] + beta[..., None, :] * cb[..., None]  # (n, K, 10, 4)
    feasible = (load <= gamma[..., None, :] + 1e-6).all(-1) & (ca > 0) & (cb > 0)
    area = torch.where(feasible, ca * cb, torch.zeros_like(ca))  # (n, K, 10)
    best = area.flatten(1).argmax(1)  # (n,)
    rows = torch.arange(n, device=matrix.device)
    a = ca.flatten(1)[rows, best]
    b = cb.flatten(1)[rows, best]
    centre = p0[rows, best // ca.shape[-1]]  # (n, 2)
    ok = area.flatten(1)[rows, best] > 0
    # Output pixel u (centred) → crop point centre + u·(a, b)/half → input point via the warp.
    a = torch.where(ok, a, half[0].expand(n))
    b = torch.where(ok, b, half[1].expand(n))
    centre = torch.where(ok[:, None], centre, torch.zeros_like(centre))
    crop = torch.zeros(n, 3, 3, device=matrix.device)
    crop[:, 0, 0], crop[:, 1, 1], crop[:, 2, 2] = a / half[0], b / half[1], 1.0
    crop[:, :2, 2] = centre
    return matrix @ crop  # (n, 2, 3)


# ---------------------------------------------------------------------------------------------
# Targets (paper §1.3): [θ/360, tx/W, ty/H, σ, sx/25, sy/25], restricted to the enabled components.


def _target_affine(spec: AffineSpec, size_px: int) -> tuple[Tensor, Tensor]:
    """Per-column (shift, divisor) so that target = (φ − shift) / divisor, for all six columns."""
    if spec.target == "paper":
        shift = torch.zeros(6)
        divisor = torch.tensor([360.0, size_px, size_px, 1.0, 25.0, 25.0])
    else:  # standardised: zero mean, unit variance under the sampling distribution
        lo, hi = spec.scale_range
        shift = torch.tensor([0.0, 0.0, 0.0, (lo + hi) / 2, 0.0, 0.0])
        sd = [spec.rotation_deg, spec.translate_frac * size_px, spec.translate_frac * size_px]
        sd += [(hi - lo) / 2, spec.shear_deg, spec.shear_deg]
        divisor = torch.tensor([max(s, 1e-6) / math.sqrt(3) for s in sd])
    return shift, divisor


@fp32
def targets(phi: Tensor, spec: AffineSpec, size_px: int) -> Tensor:
    """(n, 6) φ → (n, k) regression targets, k = target_dim(spec)."""
    shift, divisor = (v.to(phi.device) for v in _target_affine(spec, size_px))
    cols = columns(spec)
    return (phi[:, cols] - shift[cols]) / divisor[cols]


def decode(target: Tensor, spec: AffineSpec, size_px: int) -> Tensor:
    """(n, k) targets → (n, 6) φ with the disabled components at the identity."""
    shift, divisor = (v.to(target.device) for v in _target_affine(spec, size_px))
    cols = columns(spec)
    phi = torch.tensor(IDENTITY, device=target.device).repeat(target.shape[0], 1)
    phi[:, cols] = target * divisor[cols] + shift[cols]
    return phi


# ---------------------------------------------------------------------------------------------
# Aggregation, head and loss (paper §1.4–1.6)


def aggregate(h: Tensor, h_warped: Tensor, how: str) -> Tensor:
    """diff: h − h_warped (original minus transformed); concat: [h; h_warped]. (B, F) → (B, F | 2F)."""
    return h - h_warped if how == "diff" else torch.cat([h, h_warped], dim=1)


def head_in_dim(spec: AffineSpec, feat_dim: int) -> int:
    return feat_dim if spec.aggregation == "diff" else 2 * feat_dim


def build_head(spec: AffineSpec, feat_dim: int) -> nn.Sequential:
    """Linear(in, 512) → BatchNorm1d → ReLU → Linear(512, k): linear regression of φ (paper §1.5)."""
    return mlp(head_in_dim(spec, feat_dim), spec.head_hidden, target_dim(spec))


@fp32
def affine_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over batch and components, all weighted equally (paper §1.6)."""
    return F.mse_loss(pred, target)
