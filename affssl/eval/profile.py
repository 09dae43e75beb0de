"""The equivariance profile beyond the affine probe: AugSelf's crop and colour Δ, and 4-way rotation.

Every checkpoint, with or without an objective, gets the same three probes on frozen features
(design.md decision 18); `affssl.eval.evaluate_equivariance` runs them beside the affine probe
(affssl.eval.equivariance) and writes one record.

AugSelf's Δ: two views of each image, drawn with the training augmentation pipeline
(`augment.views_with_params`) from a CPU generator seeded per split, are encoded; a ridge probe
on [f(x1); f(x2)] (as AugSelf's head sees the pair) is fitted on train, its penalty per column by
leave-one-out on train, and scored as R² per column and per type (the mean over its 4 columns) on
test. The targets are the objective's own (`objectives.augself.augself_targets`).

Rotation: each image turned 0, 90, 180 and 270° (`torch.rot90`, counter-clockwise), labels 0–3;
the paper's linear probe (multinomial logistic regression, C chosen on a validation split of
train: affssl.eval.linear.trial) on the frozen features, accuracy in % on test; chance is 25 %.

A checkpoint trained with a head for a task (AugSelf, rotation) is also scored by that head on
the same test images: R² of tanh(head) per column and type, and the head's rotation accuracy; and
as trained (`r2_head_batch`, `head_acc_pct_batch`): the encoder normalising each batch by its own
statistics (affssl.batchstats), AugSelf's head on the same test views in batches of the training
batch size, E-SSL's head on its own task: small views of the test images drawn as the objective
draws them (its side, crop scale, jitter), all four turns of B views in one batch of 4B as in a
training step.

Dimensions: N images, S image side in px, F feature dimension.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import r2_score
from torch import Tensor, nn

from affssl import augment
from affssl.eval.equivariance import r2_columns
from affssl.objectives.augself import TYPES, augself_targets
from affssl.objectives.rotation import ROTATIONS, rotations, small_views
from affssl.spec import AugmentSpec, RunSpec

VIEW_SEED_OFFSET = {"train": 2, "test": 3}  # the views' streams; affine φ uses offsets 0 and 1
SMALL_VIEW_SEED_OFFSET = 4  # E-SSL's small test views, for its head as trained
VIEW_CHUNK = 1024  # images per call to the view pipeline: bounds its memory (the draws depend on it: keep it)
COLUMNS: dict[str, tuple[str, ...]] = {  # AugSelf's Δ columns per type, in the objective's order
    "crop": ("centre_y", "centre_x", "height", "width"),
    "colour": ("brightness", "contrast", "saturation", "hue"),
}
CHANCE_PCT = 100.0 / ROTATIONS


@dataclass(frozen=True)
class PairViews:
    """Two augmented views of every image of a split and their AugSelf targets."""

    v1: Tensor  # (N, 3, S, S) float32 in [0, 1]
    v2: Tensor  # (N, 3, S, S)
    targets: dict[str, Tensor]  # type → Δ (N, 4), view 1 minus view 2


def pair_views(images: Tensor, spec: AugmentSpec, seed: int) -> PairViews:
    """Views of uint8 images (N, 3, S, S) from a CPU generator seeded with `seed`, VIEW_CHUNK images per call.

    One generator runs through the chunks in order, so the draws are fixed by (images, spec, seed, VIEW_CHUNK).
    """
    gen = torch.Generator().manual_seed(seed)
    v1, v2, targets = [], [], {name: [] for name in TYPES}
    for start in range(0, len(images), VIEW_CHUNK):
        a, b, p1, p2 = augment.views_with_params(images[start : start + VIEW_CHUNK], spec, gen)  # (n, 3, S, S) ×2
        v1.append(a)
        v2.append(b)
        for name, delta in augself_targets(p1, p2, spec).items():  # (n, 4) each
            targets[name].append(delta)
    return PairViews(torch.cat(v1), torch.cat(v2), {k: torch.cat(v) for k, v in targets.items()})


def augself_r2(
    h1_train: Tensor, h2_train: Tensor, y_train: dict[str, Tensor], h1_test: Tensor, h2_test: Tensor,
    y_test: dict[str, Tensor],
) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """(R² per type, R² per column "type.column") of ridge probes on [h1; h2] (N, 2F), fitted on train."""
    z_train, z_test = torch.cat([h1_train, h2_train], 1), torch.cat([h1_test, h2_test], 1)  # (N, 2F), (M, 2F)
    return _by_type({name: r2_columns(z_train, y_train[name], z_test, y_test[name]) for name in TYPES})


def augself_head_r2(block: nn.Module, h1: Tensor, h2: Tensor, targets: dict[str, Tensor]) -> dict:
    """R² of a trained AugSelf block's tanh(head([h1; h2])) against Δ, for the types it has a head for.

    As affine's head_r2: a copy of each head normalises with the scored pairs' batch statistics.
    """
    cols = {}
    with torch.no_grad():
        for name, predictor in block.named_children():
            pred = torch.tanh(copy.deepcopy(predictor).train()(torch.cat([h1, h2], 1))).float()  # (N, 4)
            cols[name] = np.atleast_1d(r2_score(targets[name].double().numpy(), pred.double().numpy(),
                                                multioutput="raw_values"))  # fmt: skip
    r2, r2_cols = _by_type(cols)
    return {"r2": r2, "r2_columns": r2_cols}


def _by_type(cols: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    r2 = {name: float(np.mean(c)) for name, c in cols.items()}
    named = {f"{name}.{col}": float(r) for name, c in cols.items() for col, r in zip(COLUMNS[name], c, strict=True)}
    return r2, named


def rotated(images: Tensor) -> tuple[Tensor, Tensor]:
    """images (N, C, S, S) → every quarter turn (4N, C, S, S), rows k·N + i image i turned k times
    counter-clockwise (torch.rot90), and the labels (4N,) int64 k."""
    turned = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(ROTATIONS)])  # (4N, C, S, S)
    labels = torch.arange(ROTATIONS).repeat_interleave(len(images))  # (4N,)
    return turned, labels


def small_view_turns(images: Tensor, spec: RunSpec, seed: int) -> tuple[Tensor, Tensor]:
    """E-SSL's task as trained: small views of uint8 images (N, 3, S, S) drawn as the run's rotation objective
    draws them (from a CPU generator seeded with `seed`), turned four ways per chunk of B = train.batch_size
    views, as one training step stacks them: (4N, 3, s, s) float32 and labels (4N,), rows of chunk c at
    4·c·B + k·b + i (view i of the chunk's b turned k times)."""
    gen = torch.Generator().manual_seed(seed)
    views = small_views(images, spec.rotation, spec.augment, gen, spec.data.image_size_px)  # (N, 3, s, s)
    turns = [rotations(views[i : i + spec.train.batch_size]) for i in range(0, len(views), spec.train.batch_size)]
    return torch.cat([t for t, _ in turns]), torch.cat([y for _, y in turns])


@dataclass(frozen=True)
class RotationResult:
    acc_pct: float  # the linear probe's test accuracy
    C: float  # its inverse penalty, chosen on the validation split of train
    head_acc_pct: float | None  # the checkpoint's own rotation head on whole test images, eval mode; None without one
    head_acc_pct_batch: float | None = None  # the head on its own small views, encoder as trained (batch statistics)

    def summary(self) -> dict:
        return {"acc_pct": self.acc_pct, "chance_pct": CHANCE_PCT, "C": self.C, "head_acc_pct": self.head_acc_pct,
                "head_acc_pct_batch": self.head_acc_pct_batch}  # fmt: skip


def rotation_probe(h_train: Tensor, y_train: Tensor, h_test: Tensor, y_test: Tensor, seed: int,
                   max_iter: int | None = None) -> tuple[float, float]:  # fmt: skip
    """(test accuracy in %, chosen C) of the paper's linear probe on rotated images' features (4N, F)."""
    from affssl.eval.linear import MAX_ITER, trial

    t = trial(h_train, y_train, h_test, y_test, seed, max_iter or MAX_ITER)
    return t.test_acc_pct, t.C


def rotation_head_acc(block: nn.Module, h: Tensor, labels: Tensor) -> float:
    """Accuracy in % of a trained rotation block's own head on features (4N, F) of rotated images."""
    with torch.no_grad():
        pred = block.predict(h).argmax(1)  # (4N,)
    return 100.0 * float((pred == labels).double().mean())
