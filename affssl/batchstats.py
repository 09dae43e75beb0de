"""Running a network as it is trained: every BatchNorm normalises with its batch's own statistics, none moves.

In training, each set of images the encoder sees in its own pass (the base method's views, the affine warps,
E-SSL's small views, CARE's shared-draw views) is normalised by that set's batch statistics, while the running
statistics average over all of those sets. In eval mode a warped image and its source are therefore normalised
alike, and a head that learned from per-set normalised features meets inputs it never saw: on the CIFAR-10 CPU
pilots the affine head read R² −0.08 for rotation in eval mode and 0.73 on the same held-out images with batch
statistics (results/cifar10-cpu-objectives/pilots.md). The monitor and `affssl eval equivariance` score each
trained head both ways.

`batch_statistics(module)` swaps the forward of every BatchNorm layer below `module` (BatchNorm1d/2d,
SyncBatchNorm, affssl's GlobalBatchNorm) for a plain per-process batch normalisation with the layer's affine
parameters, for as long as the context lasts: no running mean, variance or batch count is read or written,
no collective runs (under torchrun each process normalises its own batches, as one process would), and every
other layer keeps its mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn


def _batch_norm(layer: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """x (B, C, …) normalised per channel by the batch's mean and biased variance, then the layer's scale and shift."""
    return F.batch_norm(x, None, None, layer.weight, layer.bias, training=True, momentum=0.0, eps=layer.eps)


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Within the context, every BatchNorm of `module` uses batch statistics and updates nothing."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and "forward" not in m.__dict__]  # fmt: skip  # nested: the outer context swapped it already
    for layer in layers:
        layer.forward = partial(_batch_norm, layer)  # an instance attribute shadows the class's forward
    try:
        yield module
    finally:
        for layer in layers:
            del layer.forward
