"""Data sources → uint8 splits: sklearn's digits, six torchvision data sets, Caltech-101, image folders.

`plan` names a source's identity (for the cache key) and the function that builds its splits:
(N, 3, S, S) uint8 images, square at `data.image_size_px`, and int64 labels. Folders are scanned
by affssl.data.folders and decoded by affssl.data.decode. Downloads (torchvision data sets,
Caltech-101) are attempted only when AFFSSL_OFFLINE is not 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torchvision
from rich.console import Console
from rich.progress import Progress
from torch import Tensor

from affssl.data import imagenet
from affssl.data.batches import stratified
from affssl.data.dataset import DataError, Loaded, Split, check_bad
from affssl.data.decode import decode_files, square
from affssl.data.folders import LAYOUTS, Files, files_in, has_class_folders, identity, scan_folder
from affssl.spec import DataSpec

TORCHVISION: dict[str, str] = {  # --dataset name → torchvision.datasets class
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "stl10": "STL10",
    "svhn": "SVHN",
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
}
# What torchvision reads in ROOT/<name>/ without downloading (its integrity check), for the offline message.
MNIST_RAW = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
OFFLINE_FILES: dict[str, str] = {
    "cifar10": "cifar-10-batches-py/ with data_batch_1 … data_batch_5 and test_batch (extract "
               "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz there)",
    "cifar100": "cifar-100-python/ with train and test (extract "
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz there)",
    "stl10": "stl10_binary/ with train_X.bin, train_y.bin, unlabeled_X.bin, test_X.bin and test_y.bin (extract "
             "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz there)",
    "svhn": "train_32x32.mat and test_32x32.mat (from http://ufldl.stanford.edu/housenumbers/)",
    "mnist": f"MNIST/raw/ with {MNIST_RAW} (the .gz files of https://ossci-datasets.s3.amazonaws.com/mnist/, "
             "decompressed)",
    "fashion-mnist": f"FashionMNIST/raw/ with {MNIST_RAW} (the .gz files of "
                     "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, decompressed)",
}  # fmt: skip
CALTECH101_URL = "https://data.caltech.edu/records/mzrjq-6wc02"
CALTECH101_SKIP = ("BACKGROUND_Google",)


def plan(spec: DataSpec, root: Path, progress: bool) -> tuple[str, Callable[[], object], Callable[[], Loaded]]:
    """(source id, identity of its files for the cache key, loader) for spec.dataset; root: the cache folder."""
    name, size = spec.dataset, spec.image_size_px
    keep = None if spec.classes_file is None else imagenet.read_classes_file(spec.classes_file)
    if keep is not None and name in ("digits", *TORCHVISION):
        raise DataError(f"data.classes_file selects class folders of an image folder, and {name!r} is not one; "
                        "leave data.classes_file unset or pass --dataset PATH")  # fmt: skip
    if name == "digits":
        data = Path(find_spec("sklearn").origin).parent / "datasets" / "data"  # located without importing it
        csv = identity(data, files_in(str(data), False, ("digits.csv.gz",)))
        return name, partial(list, csv), partial(_digits, size)
    if name in TORCHVISION:
        folder = root / name
        return name, partial(_every_file, folder), partial(_torchvision, name, folder, size)
    if name == "caltech101":  # a class folder once torchvision has fetched it
        splits, classes, folder = scan_folder(caltech101_folder(root), skip=CALTECH101_SKIP, keep=keep)
    elif not Path(name).expanduser().is_dir():
        raise DataError(
            f"--dataset {name!r} is neither a known data set (digits, caltech101, {', '.join(TORCHVISION)}) "
            f"nor an existing folder; pass one of those or an image folder laid out as {LAYOUTS}"
        )
    else:
        splits, classes, folder = scan_folder(Path(name).expanduser(), keep=keep)
    ids = [identity(folder, files) for files, _ in splits.values()]
    if (csv := imagenet.val_solution(folder)) is not None:  # it labels a flat val/: an edit must change the key
        ids.append([(csv.name, (st := csv.stat()).st_size, st.st_mtime_ns)])
    return str(folder), partial(list, ids), partial(_decode_folder, splits, classes, folder, size, progress, spec)


def labelled(dataset: str) -> bool:
    """Whether the data set has class labels, without loading it: named sets do, folders with class folders do."""
    return dataset in ("digits", "caltech101", *TORCHVISION) or has_class_folders(Path(dataset).expanduser())


def _every_file(folder: Path) -> list:
    """Identity of every file below folder, archives and extracted (none while it does not exist)."""
    return identity(folder, files_in(str(folder), True, ("",)) if folder.is_dir() else [])


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
    test_idx = stratified(labels, round(0.2 * len(labels)), torch.Generator().manual_seed(0))
    is_train = torch.ones(len(labels), dtype=torch.bool)
    is_train[test_idx] = False
    train, test = Split(images[is_train], labels[is_train]), Split(images[test_idx], labels[test_idx])
    return train, test, tuple(str(d) for d in range(10)), ()


def _torchvision(name: str, root: Path, size: int) -> Loaded:
    """Open without download, then with; offline → DataError pointing at `--dataset PATH`."""
    cls, splits, classes = getattr(torchvision.datasets, TORCHVISION[name]), [], ()
    for part in ("train", "test"):
        kwargs = {"split": part} if name in ("stl10", "svhn") else {"train": part == "train"}
        try:
            ds = cls(str(root), download=False, **kwargs)
        except (RuntimeError, OSError):
            put = f"put {root}/{OFFLINE_FILES[name]}"
            if os.environ.get("AFFSSL_OFFLINE") == "1":
                raise DataError(
                    f"data set {name!r} is not in {root} and downloads are off (AFFSSL_OFFLINE=1); {put}, "
                    f"or pass `--dataset PATH` with an image folder laid out as {LAYOUTS}"
                ) from None
            try:
                ds = cls(str(root), download=True, **kwargs)
            except (RuntimeError, OSError) as err:
                raise DataError(
                    f"data set {name!r} could not be downloaded into {root} ({err}); connect to the internet and "
                    f"retry, {put}, or pass `--dataset PATH` with an image folder laid out as {LAYOUTS}"
                ) from err
        targets = getattr(ds, "targets", None)
        labels = torch.as_tensor(np.asarray(ds.labels if targets is None else targets)).long()  # (N,)
        splits.append(Split(_to_images(ds.data, size), labels))
        classes = tuple(getattr(ds, "classes", None) or (str(c) for c in range(int(labels.max()) + 1)))
    return splits[0], splits[1], classes, ()


def caltech101_folder(root: Path) -> Path:
    """ROOT/caltech101/101_ObjectCategories, fetched by torchvision when absent and downloads are allowed."""
    folder = root / "caltech101" / "101_ObjectCategories"
    if folder.is_dir():
        return folder
    why = "downloads are off (AFFSSL_OFFLINE=1)"
    if os.environ.get("AFFSSL_OFFLINE") != "1":
        try:
            torchvision.datasets.Caltech101(str(root), download=True)
            if folder.is_dir():
                return folder
            why = "the download left no 101_ObjectCategories folder"
        except (RuntimeError, OSError, ImportError, ValueError) as err:
            why = f"download failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    raise DataError(f"caltech101 is not in {folder} ({why}); put the extracted 101_ObjectCategories/<class>/*.jpg "
                    f"there (from {CALTECH101_URL}) or pass --dataset PATH")  # fmt: skip


def _decode_folder(splits: Files, classes: tuple[str, ...], folder: Path, size: int, progress: bool,
                   spec: DataSpec) -> Loaded:  # fmt: skip
    """Every split decoded; unreadable images are left out (and listed) while within data.max_bad_frac of all."""
    total, failures, out = sum(len(files) for files, _ in splits.values()), [], {}
    with Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task(f"decoding {folder}", total=total)
        for part, (files, labels) in splits.items():
            found = len(failures)
            images = decode_files(files, size, failures, partial(bar.advance, task))
            bad = {path for path, _ in failures[found:]}
            keep = torch.tensor([path not in bad for path, _, _ in files], dtype=torch.bool)  # (n,)
            labelled = None if labels is None else torch.tensor(labels, dtype=torch.int64)[keep]
            out[part] = Split(images if keep.all() else images[keep], labelled)
    check_bad(failures, total, spec.max_bad_frac, spec.bad_first, where=f" in {folder}")  # before anything is cached
    return out["train"], out.get("test"), classes, tuple(failures)
