"""What every storage hands the engine: a Dataset of uint8 image Splits, and the data error type."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from affssl.errors import UserError


class DataError(UserError):
    """A data set that cannot be loaded; the message names the problem and the fix."""


@dataclass(frozen=True)
class Split:
    images: Tensor  # (N, 3, S, S) uint8
    labels: Tensor | None  # (N,) int64; None for unlabelled folders


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split | None
    classes: tuple[str, ...]  # empty for unlabelled


Loaded = tuple[Split, Split | None, tuple[str, ...]]  # (train, test, classes) as a source builds them
