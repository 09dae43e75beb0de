"""The data a probe sees: the checkpoint's own data set or another one, at the backbone's input size.

The test split is touched only for the final score. A data set without one (a flat folder of
class folders) gets a seeded stratified 20 % test split carved from train, and the result says so.
`--limit` subsets what remains of train (stratified, seeded); the test split stays whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from affssl.data import DataError, Dataset, Split, load_dataset, stratified, subset
from affssl.errors import UserError
from affssl.eval.features import Source, slug
from affssl.spec import DataSpec

TEST_FRAC = 0.2  # carved test split when a data set has none


@dataclass(frozen=True)
class EvalData:
    dataset: str  # as given: a name or a folder path
    tag: str  # file-name-safe form, e.g. "digits" or "cifar10" for /tmp/cifar10
    image_size_px: int
    train: Split
    test: Split
    classes: tuple[str, ...]
    test_carved: bool  # True when the test split was carved from train (no test split on disk)
    skipped: tuple[tuple[str, str], ...] = ()  # unreadable images left out, (path, why) (data.max_bad_frac)


def holdout(labels: Tensor | None, n: int, frac: float, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted (kept, held) indices of n items; stratified by label when labelled, seeded."""
    k = max(1, round(frac * n))
    gen = torch.Generator().manual_seed(seed)
    # data.stratified: per-class largest-remainder counts, the same rule as data.subset
    held = stratified(labels, k, gen) if labels is not None else torch.randperm(n, generator=gen)[:k].sort().values
    mask = torch.ones(n, dtype=torch.bool)
    mask[held] = False
    return mask.nonzero().squeeze(1), held


def take(split: Split, idx: Tensor) -> Split:
    return Split(split.images[idx], None if split.labels is None else split.labels[idx])


def dataset_spec(source: Source, dataset: str | None) -> DataSpec:
    """The DataSpec to load: the source's own data set by default, resized to its input size."""
    own = source.spec.data if source.spec is not None else None
    if dataset is None:
        if own is None:
            raise UserError(f"{source.path} does not say which data set it was trained on; pass --dataset NAME|PATH")
        dataset = own.dataset
    root = own.root if own is not None else None
    if own is None or dataset != own.dataset:
        return DataSpec(dataset=dataset, image_size_px=source.image_size_px, root=root, limit=None)
    # its own data set as it trained on it: the same classes, the same limit on unreadable images and those it skipped
    return DataSpec(dataset=dataset, image_size_px=source.image_size_px, root=root, limit=None,
                    classes_file=own.classes_file, max_bad_frac=own.max_bad_frac, bad_first=own.bad_first)  # fmt: skip


def load_eval_data(
    source: Source,
    dataset: str | None = None,
    *,
    seed: int = 0,
    limit: int | None = None,
    need_labels: bool = True,
    data: Dataset | None = None,
    progress: bool = False,
) -> EvalData:
    """Train and test splits for a probe; `data` injects an already loaded Dataset (tests)."""
    spec = dataset_spec(source, dataset)
    data = data or load_dataset(spec, seed=seed, progress=progress)
    train, test = data.train, data.test
    if need_labels and train.labels is None:
        raise DataError(
            f"data set {spec.dataset!r} is unlabelled, and this probe needs class labels; pass --dataset with class "
            "folders (PATH/<class>/*.jpg or PATH/train/<class>/*.jpg), or run `affssl eval affine`, which needs none"
        )
    if train.images.shape[-1] != source.image_size_px:
        raise DataError(
            f"data set images are {train.images.shape[-1]} px, the backbone expects {source.image_size_px} px"
        )
    carved = test is None
    if carved:
        keep, held = holdout(train.labels, len(train.images), TEST_FRAC, seed)
        train, test = take(train, keep), take(train, held)
    if limit is not None:
        train = subset(train, limit, seed)
    if len(train.images) < 2 or len(test.images) < 1:
        raise DataError(
            f"data set {spec.dataset!r} has {len(train.images)} train and {len(test.images)} test "
            "images after splitting; a probe needs more"
        )
    return EvalData(spec.dataset, slug(spec.dataset), source.image_size_px, train, test, data.classes, carved,
                    data.skipped)  # fmt: skip
