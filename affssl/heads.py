"""The MLP blocks of projectors and predictors: Linear layers with BatchNorm1d → ReLU in between."""

from collections.abc import Sequence
from itertools import pairwise

from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The paper's projector shape (2048 → 512 → 128 for ResNet-50), BN and ReLU in between."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )


def bn_mlp(dims: Sequence[int], last_bn: bool = False) -> nn.Sequential:
    """Linear layers through dims[0] → … → dims[-1], BatchNorm1d → ReLU between them.

    The MoCo v3, SimSiam and VICReg heads, which take their depth and an optional output BatchNorm
    from their papers. last_bn ends with a BatchNorm1d without affine parameters (SimCLR's design,
    kept by MoCo v3 and SimSiam). A Linear followed by BatchNorm has no bias: the normalisation
    removes it (SimSiam's code freezes that bias for the same reason).
    """
    layers: list[nn.Module] = []
    n = len(dims) - 1
    for i, (d_in, d_out) in enumerate(pairwise(dims)):
        last = i == n - 1
        layers.append(nn.Linear(d_in, d_out, bias=last and not last_bn))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)
