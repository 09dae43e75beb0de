"""The equivariance probe: how linearly frozen features encode the affine warp applied to an image.

Each held-out image x gets its own φ (all four components, the checkpoint's ranges and fill). The
frozen features h = f(x) and h_t = f(warp(x, φ)) are aggregated as the module does (diff:
h − h_t; concat: [h; h_t]). A ridge regressor is fitted on the train split, its penalty chosen per
target by leave-one-out on train (RidgeCV), and R² is reported per φ column and per component
(the mean over its columns) on test. For a checkpoint trained with the module, the R² of its own
head on the same test pairs is reported too, for the components it was trained on, twice: with the
encoder in eval mode (`r2_head`), and as trained (`r2_head_batch`): the clean and the warped test
images each encoded in batches of the training batch size normalised by their own statistics
(affssl.batchstats), as every training step encodes them; eval mode normalises both with running
statistics that averaged the two sets, which can hide what the head learned (pilots: rotation R²
−0.08 in eval mode, 0.73 as trained, on the same held-out pairs).

Dimensions: N images, F feature dimension, D aggregated dimension (F or 2F), K target columns.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from affssl import affine
from affssl.spec import COMPONENTS, AffineSpec

RIDGE_ALPHAS = np.logspace(-3, 5, 9)
PROBE_SEED_OFFSET = {"train": 0, "test": 1}  # φ of train and test images come from separate streams


@dataclass
class AffineResult:
    r2: dict[str, float]  # component → R² of the probe
    r2_columns: dict[str, float]  # φ column name → R² of the probe
    r2_head: dict[str, float] | None  # component → R² of the checkpoint's own head (None without one)
    r2_head_batch: dict[str, float] | None = None  # the same with the encoder as trained (affssl.batchstats)

    def summary(self) -> dict:
        return {"r2": self.r2, "r2_columns": self.r2_columns, "r2_head": self.r2_head,
                "r2_head_batch": self.r2_head_batch}  # fmt: skip


def probe_spec(spec: AffineSpec) -> AffineSpec:
    """The checkpoint's affine ranges, fill and interpolation with all four components and the paper's targets."""
    return spec.model_copy(update={"enabled": True, "components": COMPONENTS, "target": "paper"})


def sample_phi(n: int, spec: AffineSpec, size_px: int, seed: int) -> Tensor:
    """(n, 6) φ from a CPU generator seeded with `seed`."""
    return affine.sample(n, spec, size_px, torch.Generator().manual_seed(seed))


def r2_columns(z_train: Tensor, y_train: Tensor, z_test: Tensor, y_test: Tensor) -> np.ndarray:
    """R² per target column (K,) of a ridge regression fitted on train (penalty by LOO on train)."""
    x, x_test = z_train.double().numpy(), z_test.double().numpy()  # (N, D), (M, D)
    mean, std = x.mean(0), x.std(0).clip(min=1e-6)
    with threadpool_limits(limits=1, user_api="blas"):  # see linear.fit_path: OpenBLAS threads spin against torch's
        ridge = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True).fit((x - mean) / std, y_train.double().numpy())
    pred = ridge.predict((x_test - mean) / std).reshape(len(x_test), -1)  # (M, K)
    return np.atleast_1d(r2_score(y_test.double().numpy(), pred, multioutput="raw_values"))


def by_component(r2_cols: np.ndarray, spec: AffineSpec) -> dict[str, float]:
    """Mean R² per component over its φ columns, in target-column order of `spec`."""
    out, i = {}, 0
    for name in spec.components:
        width = len(affine.COLUMNS[name])
        out[name] = float(np.mean(r2_cols[i : i + width]))
        i += width
    return out


def probe(
    h_train: Tensor,
    hw_train: Tensor,
    phi_train: Tensor,
    h_test: Tensor,
    hw_test: Tensor,
    phi_test: Tensor,
    spec: AffineSpec,
    size_px: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """(R² per component, R² per φ column) of the ridge probe on aggregated features."""
    z_train = affine.aggregate(h_train, hw_train, spec.aggregation)  # (N, D)
    z_test = affine.aggregate(h_test, hw_test, spec.aggregation)  # (M, D)
    y_train, y_test = affine.targets(phi_train, spec, size_px), affine.targets(phi_test, spec, size_px)  # (·, K)
    cols = r2_columns(z_train, y_train, z_test, y_test)
    names = [affine.PARAM_NAMES[c] for c in affine.columns(spec)]
    return by_component(cols, spec), {n: float(r) for n, r in zip(names, cols, strict=True)}


def head_r2(
    head: nn.Module, embed: nn.Module | None, h: Tensor, h_warped: Tensor, phi: Tensor, spec: AffineSpec, size_px: int
) -> dict[str, float]:
    """R² per trained component of the checkpoint's own head on (h, h_warped) pairs.

    The head's BatchNorm normalises with the statistics of the scored pairs, as it did in training
    (over each batch), not with its running statistics: those were gathered on features of augmented
    views from an encoder in train mode, and probe features come from clean images through an encoder
    in eval mode. With the running statistics that shift alone biased the head (measured on the
    CIFAR-10 CPU study's SimCLR + affine, seed 0: scale predicted at a mean of 0.80 for a target mean of
    1.00, R² −0.91; with batch statistics R² 0.43). A copy of the head is used: the caller's head and
    its running statistics are untouched.
    `embed` maps encoder features to the projector output when the head reads there (location 'projector').
    """
    head = copy.deepcopy(head).train()
    with torch.no_grad():
        if embed is not None:
            h, h_warped = embed(h), embed(h_warped)  # (N, D) each
        pred = head(affine.aggregate(h, h_warped, spec.aggregation)).float()  # (N, k)
    target = affine.targets(phi, spec, size_px)  # (N, k) in the head's own encoding
    cols = np.atleast_1d(r2_score(target.double().numpy(), pred.double().numpy(), multioutput="raw_values"))
    return by_component(cols, spec)
