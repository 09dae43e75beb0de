"""`affssl pretrain … --preview PNG`: what training would see in its first batch, drawn, without training.

The images, views and warps come from the same functions and generators as the engine's first
step (epoch 0, rank 0): the data order from the "order" generator, both views from
`augment.views` with the "views" generator, φ from `affine.sample` with the "affine" generator,
and the warp of view 1 from `affine.warp`. Views and φ are drawn for the whole batch, as in
training (each image's draws depend on the batch), and the first few images are shown: the
stored image, view 1, view 2, view 1 warped with its φ written under it, any further views
`augment.local_views` draws after them, as training does (local crops, when multi-crop is on),
and the views the other objectives encode, each from its own stream as the learner draws them:
E-SSL's small third view (rotation) and CARE's two views whose draw is shared by a chunk.

On the chunks storage training crops each view from the whole stored image (short side
data.store_px, aspect kept), so the preview reads the first batch from the chunks as the engine
does and crops from it; the stored column shows each whole image, fitted into its panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from affssl import affine, atomic, augment
from affssl.data import Dataset, batches, load_dataset
from affssl.errors import UserError
from affssl.objectives.care import shared_views
from affssl.objectives.rotation import small_views
from affssl.spec import AUX, RunSpec

IMAGES = 8  # rows of the grid
PANEL_IN = 1.5  # width and image height of one panel, inches
CAPTION_IN = 0.4  # room under each row for the captions (φ takes two lines)
TOP_IN = 0.6  # the figure's title and the columns' titles
DPI = 100


class Preview(NamedTuple):
    """The first images of the first training batch, each tensor float32 in [0, 1] on the CPU."""

    stored: Tensor  # (n, C, S, S) the stored images, as decoded
    view1: Tensor  # (n, C, S, S)
    view2: Tensor  # (n, C, S, S)
    warped: Tensor | None  # (n, C, S, S) view 1 warped by phi; None with the module off
    phi: Tensor | None  # (n, 6) angle_deg, tx_px, ty_px, scale, shear_x_deg, shear_y_deg
    local: tuple[Tensor, ...]  # the local crops (multi-crop), each (n, C, s, s)
    objectives: tuple[tuple[str, Tensor], ...] = ()  # (title, (n, C, s, s)) the other objectives' views


def first_index(spec: RunSpec, count: int, device: torch.device) -> Tensor:
    """(B,) the rows of the engine's first batch (epoch 0, the "order" generator)."""
    from affssl.streams import generator

    index = next(batches(count, spec.train.batch_size, generator(spec.train.seed, "order", 0, device)), None)
    if index is None:
        raise UserError(f"{count} training images are fewer than one batch of {spec.train.batch_size}; "
                        "lower --batch-size or raise --limit")  # fmt: skip
    return index


def first_batch(spec: RunSpec, data: Dataset, n: int = IMAGES) -> Preview:
    """The engine's first step, up to the warp, for the first n images of its batch (tensor storage)."""
    from affssl.engine import resolve_device

    device = resolve_device(spec.train.device)
    images = data.train.images  # (N, C, S, S) uint8
    x = images.to(device)[first_index(spec, images.shape[0], device)]  # (B, C, S, S) uint8
    return _views(spec, x, None, n)


def first_chunk_batch(spec: RunSpec, feed, n: int = IMAGES) -> Preview:
    """The same on the chunks storage: the first batch read from `feed` (a ChunkFeed), cropped from whole images."""
    index = first_index(spec, feed.count, feed.device)
    reader = feed.epoch([index], 0, len(index), 0)
    x, sizes = next(reader)  # (B, C, H_max, W_max) uint8, (B, 2)
    reader.close()  # its loader workers end
    return _views(spec, x, sizes, n)


def _views(spec: RunSpec, x: Tensor, sizes: Tensor | None, n: int) -> Preview:
    """What the learner and the affine block draw from x (B, C, H, W) uint8 (whole images of `sizes` when given)."""
    from affssl.streams import generator

    device, size = x.device, spec.data.image_size_px
    g_views = generator(spec.train.seed, "views", 0, device)
    if sizes is None:
        v1, v2 = augment.views(x, spec.augment, g_views)  # (B, C, S, S) each
    else:
        v1, v2 = augment.views(x, spec.augment, g_views, sizes, size)  # (B, C, S, S) each
    B, local = x.shape[0], []
    if spec.augment.local_crops:  # drawn after the global views from the same generator, as the learner does
        every = augment.local_views(x, spec.augment, g_views, sizes)  # (N·B, C, s, s), row c·B + i: crop c of image i
        local = [every[c * B : (c + 1) * B] for c in range(spec.augment.local_crops)]
    warped = phi = None
    if spec.affine.enabled:
        g_affine = generator(spec.train.seed, "affine", 0, device)
        phi = affine.sample(v1.shape[0], spec.affine, v1.shape[-1], g_affine)  # (B, 6)
        warped = affine.warp(v1, phi, spec.affine)  # (B, C, S, S)
    first = lambda t: None if t is None else t[:n].float().cpu()  # noqa: E731
    others = []
    if spec.rotation.enabled:
        g_rotation = generator(spec.train.seed, "rotation", 0, device)
        others.append(("rotation: small view", small_views(x, spec.rotation, spec.augment, g_rotation, size, sizes)))
    if spec.care.enabled:
        c1, c2 = shared_views(x, spec.augment, spec.care.chunks, generator(spec.train.seed, "care", 0, device), size,
                              sizes)  # fmt: skip
        others += [("CARE view 1", c1), ("CARE view 2", c2)]
    stored = first(x).div(255) if sizes is None else fitted(first(x).div(255), sizes[:n].cpu(), size)
    return Preview(stored, first(v1), first(v2), first(warped), first(phi), tuple(map(first, local)),
                   tuple((title, first(t)) for title, t in others))  # fmt: skip


def fitted(x: Tensor, sizes: Tensor, size: int) -> Tensor:
    """Whole images x (n, C, H_max, W_max) of (height, width) `sizes` (n, 2), each resized to fit a size × size
    panel (aspect kept, long side = size) on black: (n, C, size, size)."""
    out = x.new_zeros(x.shape[0], x.shape[1], size, size)
    for i, (h, w) in enumerate(sizes.tolist()):
        th, tw = max(1, round(h * size / max(h, w))), max(1, round(w * size / max(h, w)))
        out[i, :, :th, :tw] = TF.resize(x[i, :, :h, :w], [th, tw], antialias=True)
    return out


def phi_text(phi: Tensor) -> str:
    """φ of one image (6,) as two caption lines: rotation and translation; scale and shear."""
    angle, tx, ty, scale, shx, shy = phi.tolist()
    return f"θ {angle:+.1f}°  t ({tx:+.0f}, {ty:+.0f}) px\ns {scale:.3f}  sh ({shx:+.1f}°, {shy:+.1f}°)"


def columns(preview: Preview) -> list[tuple[str, Tensor]]:
    """The grid's columns, left to right: (title, images)."""
    cols = [("stored", preview.stored), ("view 1", preview.view1), ("view 2", preview.view2)]
    if preview.warped is not None:
        cols.append(("view 1 warped (φ)", preview.warped))
    cols += [(f"local crop {i + 1}", t) for i, t in enumerate(preview.local)]
    return cols + list(preview.objectives)


def figure_size_px(preview: Preview) -> tuple[int, int]:
    """(width, height) of the PNG in pixels."""
    rows, cols = preview.stored.shape[0], len(columns(preview))
    return round(cols * PANEL_IN * DPI), round((rows * (PANEL_IN + CAPTION_IN) + TOP_IN) * DPI)


def draw(preview: Preview, path: Path, title: str) -> Path:
    """The grid as a PNG (matplotlib's Agg canvas, no pyplot state); written whole or not at all."""
    from matplotlib.figure import Figure

    cols = columns(preview)
    rows = preview.stored.shape[0]
    width_px, height_px = figure_size_px(preview)
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    axes = fig.subplots(rows, len(cols), squeeze=False)
    for c, (name, images) in enumerate(cols):
        for r in range(rows):
            ax = axes[r][c]
            image = images[r].permute(1, 2, 0).clamp(0, 1).numpy()  # (S, S, C)
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
            if name.startswith("view 1 warped"):
                ax.set_xlabel(phi_text(preview.phi[r]), fontsize=6)
    height_in = height_px / DPI
    fig.suptitle(title, fontsize=8, y=1 - 0.15 / height_in)
    fig.subplots_adjust(left=0.03, right=0.97, top=1 - TOP_IN / height_in, bottom=CAPTION_IN / height_in,
                        hspace=CAPTION_IN / PANEL_IN, wspace=0.08)  # fmt: skip
    return atomic.write_png(fig, path, DPI)


def write_preview(spec: RunSpec, path: Path, n: int = IMAGES, progress: bool = False) -> Preview:
    """Load the run's data as `affssl pretrain` would, compute the first batch's views and draw them into `path`."""
    if path.suffix.lower() != ".png":
        raise UserError(f"--preview {path} must name a .png file")
    from affssl.data import storage
    from affssl.engine import resolve_device

    device = resolve_device(spec.train.device)
    if storage.resolve(spec.data, device, None)[0] == "chunks":  # training crops from the whole stored images
        spec, feed = storage.prepare(spec, device, None, progress)
        preview, what = first_chunk_batch(spec, feed, n), "whole stored images, cropped"
    else:
        preview, what = first_batch(spec, load_dataset(spec.data, seed=spec.train.seed, progress=progress), n), ""
    on = [name for name in AUX if getattr(spec, name).enabled]
    module = ("module on" if spec.affine.enabled else "module off") + "".join(f" + {n}" for n in on if n != "affine")
    draw(preview, path, f"{spec.data.dataset}, {spec.data.image_size_px} px: first batch of seed {spec.train.seed} "
                        f"(batch {spec.train.batch_size}, {module}{', ' + what if what else ''})")  # fmt: skip
    return preview
