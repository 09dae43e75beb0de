"""CARE (Gupta et al. 2023, arXiv 2306.13924): an augmentation should act on the embeddings as an orthogonal map.

Two extra views of each image, where one augmentation draw (crop, flip, jitter, …) is shared by every image
of a chunk of the batch: then the pair (t1, t2) is one map for the whole chunk, and an orthogonal map keeps
every inner product, so the chunk's Gram matrices of the two views' L2-normalised projector outputs must agree:

    G_v = z_v z_vᵀ (m × m per chunk of m images),  D = G_1 − G_2 with its diagonal set to 0
    loss_chunk = 2 · mean_i ‖D_i‖²  (mean over the chunk's rows),  loss = mean over chunks

No head, no parameters. B images split into `chunks` chunks of ⌊B/K⌋ or ⌈B/K⌉ images (consecutive rows), K =
min(chunks, B). The shared draws come from the run's "care" stream (affssl.streams). With several processes
each chunks its own rows of the batch (no gather: a chunk's images share their draw within one process).

    care = CARE()
    loss = loss_ssl + λ * care(z1, z2)     # z: projector outputs of two views drawn per chunk (shared_views)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affssl import augment
from affssl.affine_block import default_generator
from affssl.objectives.step import Step
from affssl.precision import fp32
from affssl.spec import AugmentSpec, CareSpec


def chunk_of(batch: int, chunks: int, device: torch.device | None = None) -> Tensor:
    """(B,) int64 the chunk of each row: consecutive rows, K = min(chunks, B) chunks of ⌊B/K⌋ or ⌈B/K⌉ rows."""
    k = min(chunks, batch)
    return torch.arange(batch, device=device) * k // batch


@fp32
def care_loss(z1: Tensor, z2: Tensor, chunks: int) -> Tensor:
    """z1, z2 (B, D) the two views' embeddings (normalised here), rows chunked as `chunk_of(B, chunks)` → scalar fp32.

    All chunks at once: the full (B, B) Gram difference, kept where both rows share a chunk and off the diagonal.
    """
    B = z1.shape[0]
    chunk, k = chunk_of(B, chunks, z1.device), min(chunks, B)  # (B,), K
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)  # (B, D)
    diff = z1 @ z1.T - z2 @ z2.T  # (B, B)
    same = chunk[:, None] == chunk[None, :]  # (B, B)
    same.fill_diagonal_(False)
    row_sq = (diff * same).square().sum(1)  # (B,) ‖D_i‖² within row i's chunk
    size = row_sq.new_zeros(k).index_add_(0, chunk, torch.ones_like(row_sq))  # (K,) rows per chunk
    per_chunk = row_sq.new_zeros(k).index_add_(0, chunk, row_sq) / size  # (K,) mean over its rows
    return 2 * per_chunk.mean()


class CARE(nn.Module):
    """CARE's equivariance loss as a block; it has no parameters (its state dict is empty)."""

    def __init__(self, spec: CareSpec | None = None):
        super().__init__()
        self.spec = spec or CareSpec()

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """z1, z2 (B, D): projector outputs of two views whose draws are shared per chunk (`chunk_of`) → scalar."""
        return care_loss(z1, z2, self.spec.chunks)

    def extra_repr(self) -> str:
        return f"chunks={self.spec.chunks}"


@fp32  # the views as augment.views makes them: autocast off
def shared_views(x: Tensor, augment_spec: AugmentSpec, chunks: int, gen: torch.Generator, size_px: int,
                 sizes: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """x (B, C, H, W) uint8 → two views (B, C, S, S) float32 by the base views' pipeline, each with one draw per
    chunk (`chunk_of(B, chunks)`) shared by the chunk's images; view 2 draws after view 1."""
    B = x.shape[0]
    chunk, k = chunk_of(B, chunks, x.device), min(chunks, B)  # (B,), K
    xf = x.float().div_(255)  # (B, C, H, W) in [0, 1]
    size, scale = (size_px, size_px), augment_spec.crop_scale
    v1, _ = augment.crop_view_params(xf, augment_spec, gen, 1, size, scale, augment_spec.blur_p[0],
                                     augment_spec.solarize_p[0], sizes, shared=(k, chunk))  # fmt: skip
    v2, _ = augment.crop_view_params(xf, augment_spec, gen, 1, size, scale, augment_spec.blur_p[1],
                                     augment_spec.solarize_p[1], sizes, shared=(k, chunk))  # fmt: skip
    return v1, v2


def step_loss(block: CARE, step: Step, gen: torch.Generator | None) -> Tensor:
    """The learner's call: two shared-draw views from the care stream, through backbone and projector."""
    spec, gen = step.spec, gen or default_generator(step.x.device)
    v1, v2 = shared_views(step.x, spec.augment, block.spec.chunks, gen, spec.data.image_size_px, step.sizes)
    return block(step.embedded(v1), step.embedded(v2))


def build(spec: CareSpec, feat_dim: int, proj_dim: int) -> CARE:
    return CARE(spec)
