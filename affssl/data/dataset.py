"""What every storage hands the engine: a Dataset of uint8 image Splits, the data error type, and the rule for
unreadable images (data.max_bad_frac) both storages and every command apply."""

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


Bad = tuple[str, str]  # (path, why it could not be read)
SHOW_BAD = 5  # bad paths named in messages and spec.json


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split | None
    classes: tuple[str, ...]  # empty for unlabelled
    skipped: tuple[Bad, ...] = ()  # unreadable images left out of the splits (within data.max_bad_frac)
    fingerprint: Fingerprint | None = None  # of the source's files (affssl.data.fingerprint); None: not known


# (train, test, classes, unreadable images left out) as a source builds them
Loaded = tuple[Split, Split | None, tuple[str, ...], tuple[Bad, ...]]


def check_bad(bad: list[Bad] | tuple[Bad, ...], total: int, max_bad_frac: float, known: tuple[str, ...] = (),
              where: str = "", after: str = "") -> None:  # fmt: skip
    """Raise when more than max_bad_frac of `total` images are unreadable; those in `known` (the ones a run already
    recorded as skipped, data.bad_first) do not count against it. `where`: ' in FOLDER'; `after`: what was not kept."""
    counted = [b for b in bad if b[0] not in known]
    if counted and len(counted) > max_bad_frac * total:
        raise DataError(f"{len(counted)} of {total} images{where} ({len(counted) / total:.2%}) could not be read, more "
                        f"than data.max_bad_frac {max_bad_frac:g}: {describe(counted)}; remove or replace them, or "
                        f"raise data.max_bad_frac{after}")  # fmt: skip


def describe(bad: list[Bad] | tuple[Bad, ...]) -> str:
    listed = "; ".join(f"{p} ({why})" for p, why in bad[:SHOW_BAD])
    return listed + (" …" if len(bad) > SHOW_BAD else "")


def skipped_line(bad: tuple[Bad, ...], dataset: str, max_bad_frac: float) -> str:
    """The note when unreadable images were left out: how many, the limit, the first of them."""
    more = " …" if len(bad) > SHOW_BAD else ""
    return (f"skipped {len(bad)} unreadable image(s) of {dataset} (data.max_bad_frac {max_bad_frac:g}): "
            f"{', '.join(p for p, _ in bad[:SHOW_BAD])}{more}")  # fmt: skip
