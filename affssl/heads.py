"""The MLP block shared by projectors and predictors: Linear → BatchNorm1d → ReLU → Linear."""

from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The paper's projector shape (2048 → 512 → 128 for ResNet-50), BN and ReLU in between."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )
