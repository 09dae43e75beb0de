"""Image-folder layouts → sorted file lists and labels per split (no decoding; affssl.data.decode does that).

Layouts, detected in this order:
    Tiny ImageNet   PATH/train/<wnid>/images/*.JPEG; test split: PATH/val/images/*.JPEG labelled by
                    PATH/val/val_annotations.txt (tab-separated: file, wnid, bbox…), as the paper
                    evaluated; PATH/test/ (unlabelled there) is ignored
    splits          PATH/train/<class>/*.jpg; test split: PATH/test/, else PATH/val/, laid out as train/
    ILSVRC-2012     PATH/train/<wnid>/*.JPEG; test split: PATH/val/<wnid>/*.JPEG, or a flat
                    PATH/val/*.JPEG labelled by LOC_val_solution.csv (affssl.data.imagenet); the
                    Kaggle download's top folder may be given for its ILSVRC/Data/CLS-LOC
    classes         PATH/<class>/*.jpg
    unlabelled      PATH/*.jpg (PATH/train/*.jpg)
Class folders are searched recursively and sorted by name, as torchvision's ImageFolder.
Caltech-101 (affssl.data.sources) is a class folder scanned here without its background class;
it has no test split, so probes carve one (eval.splits).
"""

from __future__ import annotations

import os
from pathlib import Path

from affssl.data import imagenet
from affssl.data.dataset import DataError
from affssl.data.decode import IMAGE_EXTENSIONS, Entry

LAYOUTS = "PATH/train/<class>/*.jpg (+ PATH/test/ or PATH/val/ alike), PATH/<class>/*.jpg, or PATH/*.jpg (unlabelled)"
Files = dict[str, tuple[list[Entry], list[int] | None]]  # split → (sorted image files, labels or None)
TINY_ANNOTATIONS = Path("val") / "val_annotations.txt"


def files_in(folder: str, recursive: bool, suffixes: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Entry]:
    """Files in folder (and below when recursive), sorted by path; os.scandir, as pathlib is slow."""
    found = []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                found += files_in(e.path, True, suffixes) if recursive else []
            elif e.name.lower().endswith(suffixes):
                st = e.stat()
                found.append((e.path, st.st_size, st.st_mtime_ns))
    return sorted(found)


def scan_split(
    folder: Path, classes: tuple[str, ...], skip: tuple[str, ...] = (), keep: tuple[str, ...] | None = None
) -> tuple[list[Entry], list[int] | None, tuple[str, ...]]:
    """Files and labels of one split: class sub-folders (sorted by name, as ImageFolder) or loose images.

    `skip`: class folders to leave out; `keep`: the only class folders to use (data.classes_file).
    """
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in skip)
    chosen = [d for d in subdirs if keep is None or d.name in keep]
    per_class = {d.name: files for d in chosen if (files := files_in(str(d), recursive=True))}
    if not per_class and (keep is None or not any(files_in(str(d), recursive=True) for d in subdirs)):
        return files_in(str(folder), recursive=False), None, ()  # no class folders: loose images
    classes = classes or tuple(per_class)
    if unknown := sorted(set(per_class) - set(classes)):
        raise DataError(f"{folder} has classes {unknown} that train/ lacks; use the same class folders in both")
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[c] for c, files in per_class.items() for _ in files]
    return [f for files in per_class.values() for f in files], labels, classes


def scan_tiny_imagenet_val(folder: Path, classes: tuple[str, ...]) -> tuple[list[Entry], list[int]]:
    """val/images/*.JPEG labelled by val/val_annotations.txt, in file order."""
    wnid: dict[str, str] = {}
    for n, line in enumerate((folder / TINY_ANNOTATIONS).read_text().splitlines(), 1):
        if line.strip():
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError(f"{folder / TINY_ANNOTATIONS} line {n} is not 'file<TAB>wnid<TAB>…'; restore the file")
            wnid[parts[0]] = parts[1]
    files = files_in(str(folder / "val" / "images"), recursive=False)
    if missing := [Path(p).name for p, _, _ in files if wnid.get(Path(p).name) not in classes]:
        raise DataError(f"{folder / 'val/images'}: {len(missing)} image(s) (e.g. {missing[0]}) have no annotation "
                        f"naming a train/ class in {TINY_ANNOTATIONS}; restore val_annotations.txt")  # fmt: skip
    return files, [classes.index(wnid[Path(p).name]) for p, _, _ in files]


def scan_folder(path: Path, skip: tuple[str, ...] = (),
                keep: tuple[str, ...] | None = None) -> tuple[Files, tuple[str, ...], Path]:  # fmt: skip
    """Every split's files and labels, the classes, and the resolved folder.

    `skip`: class folders to leave out; `keep`: the only class folders to use, each of which train/ must have.
    """
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; pass an image folder laid out as {LAYOUTS}")
    folder = imagenet.data_folder(path.resolve())
    has_split = (folder / "train").is_dir()
    train_files, train_labels, classes = scan_split(folder / "train" if has_split else folder, (), skip, keep)
    if keep is not None and train_labels is not None and (missing := [c for c in keep if c not in classes]):
        raise DataError(f"{len(missing)} class(es) of data.classes_file (e.g. {missing[0]}) have no image folder in "
                        f"{folder / 'train' if has_split else folder}; fix the list or the folder")  # fmt: skip
    if not train_files:
        raise DataError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)}); expected {LAYOUTS}")
    if keep is not None and train_labels is None:
        raise DataError(f"data.classes_file selects class folders, and {path} has none; leave data.classes_file unset")
    splits: Files = {"train": (train_files, train_labels)}
    if has_split and (test := _test_split(folder, classes, train_labels is not None, skip, keep)):
        splits["test"] = test
    return splits, classes, folder


def scan_test(path: Path, classes: tuple[str, ...], skip: tuple[str, ...] = (),
              keep: tuple[str, ...] | None = None) -> tuple[list[Entry], list[int] | None] | None:  # fmt: skip
    """The labelled test split scan_folder finds for path and its classes (None: none), without scanning train/."""
    folder = imagenet.data_folder(path.resolve())
    return _test_split(folder, classes, True, skip, keep) if (folder / "train").is_dir() else None


def _test_split(folder: Path, classes: tuple[str, ...], labelled: bool, skip: tuple[str, ...],
                keep: tuple[str, ...] | None) -> tuple[list[Entry], list[int] | None] | None:  # fmt: skip
    """Tiny ImageNet's val/images, else the first of test/ and val/ labelled as train/ is (none: no test split).

    A flat val/ is labelled by LOC_val_solution.csv when there is one (ILSVRC-2012). ILSVRC's test/ is
    unlabelled: with class folders in train/, it is passed over for val/.
    """
    if labelled and (folder / TINY_ANNOTATIONS).is_file():
        return scan_tiny_imagenet_val(folder, classes)
    mismatched = []
    for name in ("test", "val"):
        if not (folder / name).is_dir():
            continue
        files, labels, _ = scan_split(folder / name, classes, skip, keep)
        if name == "val" and labelled and files and labels is None and (csv := imagenet.val_solution(folder)):
            files, labels = imagenet.label_val(files, csv, classes, subset=keep is not None)
        if files and (labels is not None) == labelled:
            return files, labels
        mismatched += [name] if files else []
    if mismatched:
        raise DataError(f"{folder}: train/ and {mismatched[0]}/ must both have class folders, or neither"
                        f"{f' (or a flat val/ with {imagenet.VAL_SOLUTION})' if labelled else ''}")  # fmt: skip
    return None


def has_class_folders(path: Path) -> bool:
    """Whether scan_folder would find labels: a class sub-folder holding an image (stops at the first)."""
    if not path.is_dir():
        return False
    folder = imagenet.data_folder(path.resolve())
    folder = folder / "train" if (folder / "train").is_dir() else folder
    return any(_holds_image(d.path) for d in os.scandir(folder) if d.is_dir() and not d.name.startswith("."))


def _holds_image(folder: str) -> bool:
    """Whether folder or a folder below it holds an image file (stops at the first)."""
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.name.lower().endswith(IMAGE_EXTENSIONS) or (e.is_dir() and _holds_image(e.path)):
                return True
    return False


def identity(root: Path, files: list[Entry]) -> list[Entry]:
    """(path relative to root, size, mtime_ns) per file: any edit changes the cache key."""
    return [(path[len(str(root)) + 1 :], size, mtime) for path, size, mtime in files]
