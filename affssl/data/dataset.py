"""What every storage hands the engine: a Dataset of uint8 image Splits, and the data error type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from affssl.errors import UserError

if TYPE_CHECKING:
    from affssl.data.fingerprint import Fingerprint


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
    fingerprint: Fingerprint | None = None  # of the source's files (affssl.data.fingerprint); None: not known


Loaded = tuple[Split, Split | None, tuple[str, ...]]  # (train, test, classes) as a source builds them
