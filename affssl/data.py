"""Datasets → uint8 tensors in memory, plus the epoch batch iterator (design decision 1).

`load_dataset` turns a `DataSpec` into a `Dataset` of (N, 3, S, S) uint8 images and int64 labels
from sklearn's digits (offline default), six torchvision data sets, Caltech-101, or any image folder
(layouts in affssl.folders, files decoded by affssl.decode). Decoding happens once: the full data is
cached as safetensors under a sha256 key of the source's identity (paths, sizes, mtimes), the image
size and a format version, so an edit to the source invalidates it. The cached images are
memory-mapped, not read: the pixels live once in the page cache, shared by every process of the
node that maps the file (under torchrun the node's local rank 0 decodes and writes it while the
other ranks wait, then all map it). `--limit` is applied after the cache, stratified and seeded (a
copy of the subset only). Randomness takes explicit Generators. Downloads (torchvision data sets,
Caltech-101) are attempted only when AFFSSL_OFFLINE is not 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torchvision
from rich.console import Console
from rich.progress import Progress
from safetensors import SafetensorError
from torch import Tensor

from affssl import distributed
from affssl.decode import decode_files, square
from affssl.folders import (
    CALTECH101_SKIP,
    LAYOUTS,
    DataError,
    Files,
    caltech101_folder,
    files_in,
    identity,
    scan_folder,
)
from affssl.spec import DataSpec
from affssl.tensorfile import map_tensors, write_atomic

FORMAT_VERSION = 1  # bump when the decoded content changes, so old cache files are not reused
TORCHVISION: dict[str, str] = {  # --dataset name → torchvision.datasets class
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "stl10": "STL10",
    "svhn": "SVHN",
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
}


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


Loaded = tuple[Split, Split | None, tuple[str, ...]]


def cache_dir(spec: DataSpec) -> Path:
    """spec.root, else $AFFSSL_CACHE, else ~/.cache/affssl."""
    return Path(spec.root or os.environ.get("AFFSSL_CACHE") or Path.home() / ".cache" / "affssl")


def load_dataset(spec: DataSpec, seed: int = 0, progress: bool = False) -> Dataset:
    """Load, resize to spec.image_size_px, apply spec.limit to train (stratified, seeded by `seed`)."""
    source, identify, build = _plan(spec, progress)
    train, test, classes = _through_cache(spec, source, identify, build) if spec.cache else build()
    if spec.limit is not None:
        train = subset(train, spec.limit, seed)
    return Dataset(name=spec.dataset, train=train, test=test, classes=classes)


def _through_cache(spec: DataSpec, source: str, identify: Callable[[], object], build: Callable[[], Loaded]) -> Loaded:
    """The cached data, memory-mapped; on a miss build it, write the cache and map that.

    Under torchrun the node's local rank 0 goes first; the others wait at a barrier, then map the
    file it wrote (or, if it could not write one, build their own). Every rank passes the barrier
    once, also when local rank 0 fails, so its error reaches every rank instead of a hang.
    """
    with distributed.local_rank0_first():
        if (loaded := _read_cache(_cache_path(spec, source, identify()), spec.image_size_px)) is not None:
            return loaded
        loaded = build()
        path = _cache_path(spec, source, identify())  # identify again: a download may have created the files
        _write_cache(path, *loaded)
        return _read_cache(path, spec.image_size_px) or loaded  # the map, so the decoded copy can go


def _plan(spec: DataSpec, progress: bool) -> tuple[str, Callable[[], object], Callable[[], Loaded]]:
    """(source id, identity of its files for the cache key, loader) for spec.dataset."""
    name, size = spec.dataset, spec.image_size_px
    if name == "digits":
        data = Path(find_spec("sklearn").origin).parent / "datasets" / "data"  # located without importing it
        csv = identity(data, files_in(str(data), False, ("digits.csv.gz",)))
        return name, partial(list, csv), partial(_digits, size)
    if name in TORCHVISION:
        root = cache_dir(spec) / name
        files = partial(files_in, str(root), True, ("",))  # every file: archives and extracted
        return name, lambda: identity(root, files() if root.is_dir() else []), partial(_torchvision, name, root, size)
    if name == "caltech101":  # a class folder once torchvision has fetched it
        splits, classes, folder = scan_folder(caltech101_folder(cache_dir(spec)), skip=CALTECH101_SKIP)
    else:
        splits, classes, folder = scan_folder(Path(name).expanduser())
    ids = [identity(folder, files) for files, _ in splits.values()]
    return str(folder), partial(list, ids), partial(_decode_folder, splits, classes, folder, size, progress)


def subset(split: Split, n: int, seed: int) -> Split:
    """n items (all if n ≥ N), class proportions kept when labelled; same seed → same items, in order."""
    if n >= len(split.images):
        return split
    gen = torch.Generator().manual_seed(seed)
    if split.labels is None:
        idx = torch.randperm(len(split.images), generator=gen)[:n].sort().values  # (n,)
        return Split(split.images[idx], None)
    idx = _stratified(split.labels, n, gen)
    return Split(split.images[idx], split.labels[idx])


def batches(n: int, batch_size: int, gen: torch.Generator, drop_last: bool = True) -> Iterator[Tensor]:
    """Yield int64 index tensors of one epoch: a permutation from gen split into batches."""
    chunks = list(torch.randperm(n, generator=gen).split(batch_size))  # drawn now: gen advances per call
    if drop_last and chunks and len(chunks[-1]) < batch_size:
        chunks.pop()
    return iter(chunks)


def _stratified(labels: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """Sorted indices of n items; per-class counts by largest remainder (ties → lower class)."""
    classes, counts = labels.unique(return_counts=True)  # (C,), (C,)
    take, remainder = (counts * n).div(len(labels), rounding_mode="floor"), (counts * n) % len(labels)
    take[torch.argsort(-remainder, stable=True)[: n - int(take.sum())]] += 1
    picks = []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        members = (labels == c).nonzero().squeeze(1)  # (n_c,)
        picks.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.cat(picks).sort().values  # (n,)


def _to_images(array: np.ndarray | Tensor, size: int) -> Tensor:
    """(N, h, w), (N, h, w, 3) or (N, 3, h, w) uint8 array → (N, 3, S, S) uint8 tensor."""
    x = torch.as_tensor(np.asarray(array))
    if x.ndim == 3:  # grey (N, h, w)
        x = x.unsqueeze(1).expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:  # channels last (N, h, w, 3)
        x = x.permute(0, 3, 1, 2)
    return square(x.contiguous(), size)


def _digits(size: int) -> Loaded:
    """sklearn digits with a fixed stratified 80/20 split (seed 0, independent of the run seed)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = torch.from_numpy(bunch.images * (255 / 16)).round().to(torch.uint8)  # (1797, 8, 8)
    images, labels = _to_images(grey, size), torch.from_numpy(bunch.target).long()
    test_idx = _stratified(labels, round(0.2 * len(labels)), torch.Generator().manual_seed(0))
    is_train = torch.ones(len(labels), dtype=torch.bool)
    is_train[test_idx] = False
    train, test = Split(images[is_train], labels[is_train]), Split(images[test_idx], labels[test_idx])
    return train, test, tuple(str(d) for d in range(10))


def _torchvision(name: str, root: Path, size: int) -> Loaded:
    """Open without download, then with; offline → DataError pointing at `--dataset PATH`."""
    cls, splits, classes = getattr(torchvision.datasets, TORCHVISION[name]), [], ()
    for part in ("train", "test"):
        kwargs = {"split": part} if name in ("stl10", "svhn") else {"train": part == "train"}
        try:
            ds = cls(str(root), download=False, **kwargs)
        except (RuntimeError, OSError):
            if os.environ.get("AFFSSL_OFFLINE") == "1":
                raise DataError(
                    f"data set {name!r} is not in {root} and downloads are off (AFFSSL_OFFLINE=1); put it there, "
                    f"or pass `--dataset PATH` with an image folder laid out as {LAYOUTS}"
                ) from None
            try:
                ds = cls(str(root), download=True, **kwargs)
            except (RuntimeError, OSError) as err:
                raise DataError(
                    f"data set {name!r} could not be downloaded into {root} ({err}); connect to the internet and "
                    f"retry, or pass `--dataset PATH` with an image folder laid out as {LAYOUTS}"
                ) from err
        targets = getattr(ds, "targets", None)
        labels = torch.as_tensor(np.asarray(ds.labels if targets is None else targets)).long()  # (N,)
        splits.append(Split(_to_images(ds.data, size), labels))
        classes = tuple(getattr(ds, "classes", None) or (str(c) for c in range(int(labels.max()) + 1)))
    return splits[0], splits[1], classes


def _decode_folder(splits: Files, classes: tuple[str, ...], folder: Path, size: int, progress: bool) -> Loaded:
    total, failures, out = sum(len(files) for files, _ in splits.values()), [], {}
    with Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task(f"decoding {folder}", total=total)
        for part, (files, labels) in splits.items():
            images = decode_files(files, size, failures, partial(bar.advance, task))
            out[part] = Split(images, None if labels is None else torch.tensor(labels, dtype=torch.int64))
    if failures:
        listed = "; ".join(f"{f} ({why})" for f, why in failures[:5])
        raise DataError(
            f"{len(failures)} image file(s) in {folder} could not be decoded: {listed}"
            f"{' …' if len(failures) > 5 else ''}; remove or replace them"
        )
    return out["train"], out.get("test"), classes


def _cache_path(spec: DataSpec, source: str, identity: object) -> Path:
    blob = json.dumps([source, identity, spec.image_size_px, FORMAT_VERSION])
    return cache_dir(spec) / "decoded" / f"{hashlib.sha256(blob.encode()).hexdigest()}.safetensors"


def _read_cache(path: Path, size: int) -> Loaded | None:
    """The cached data (images mapped, not copied), or None when absent, corrupt or malformed."""
    if not path.is_file():
        return None
    try:
        t, meta = map_tensors(path)
        classes = tuple(json.loads(meta["classes"]))
    except (OSError, KeyError, TypeError, ValueError):
        return None
    splits = [Split(t[f"images_{p}"], t.get(f"labels_{p}")) if f"images_{p}" in t else None for p in ("train", "test")]
    for s in filter(None, splits):  # a foreign or hand-edited file counts as corrupt
        labels_ok = s.labels is None or (s.labels.dtype == torch.int64 and s.labels.shape == s.images.shape[:1])
        if s.images.dtype != torch.uint8 or s.images.shape[1:] != (3, size, size) or not labels_ok:
            return None
    return (splits[0], splits[1], classes) if splits[0] is not None else None


def _write_cache(path: Path, train: Split, test: Split | None, classes: tuple[str, ...]) -> None:
    """Write the cache atomically; a failure (full disk, read-only folder) only warns: training goes on."""
    tensors: dict[str, Tensor] = {}
    for part, split in (("train", train), ("test", test)):
        for kind, t in (("images", split and split.images), ("labels", split and split.labels)):
            if t is not None:
                tensors[f"{kind}_{part}"] = t
    try:
        write_atomic(path, tensors, {"classes": json.dumps(list(classes)), "format": str(FORMAT_VERSION)})
    except (OSError, SafetensorError) as err:
        warnings.warn(f"decode cache {path} not written ({err}); set data.root to a writable folder", stacklevel=3)
