"""Image-folder layouts → sorted file lists and labels per split (no decoding; affssl.data.decode does that).

Layouts, detected in this order:
    Tiny ImageNet   PATH/train/<wnid>/images/*.JPEG; test split: PATH/val/images/*.JPEG labelled by
                    PATH/val/val_annotations.txt (tab-separated: file, wnid, bbox…), as the paper
                    evaluated; PATH/test/ (unlabelled there) is ignored
    splits          PATH/train/<class>/*.jpg (+ PATH/test/<class>/*.jpg)
    classes         PATH/<class>/*.jpg
    unlabelled      PATH/*.jpg
Class folders are searched recursively and sorted by name, as torchvision's ImageFolder.
Caltech-101 (affssl.data.sources) is a class folder scanned here without its background class;
it has no test split, so probes carve one (eval.splits).
"""

from __future__ import annotations

import os
from pathlib import Path

from affssl.data.dataset import DataError
from affssl.data.decode import IMAGE_EXTENSIONS, Entry

LAYOUTS = "PATH/train/<class>/*.jpg (+ PATH/test/<class>/*.jpg), PATH/<class>/*.jpg, or PATH/*.jpg (unlabelled)"
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


def scan_split(folder: Path, classes: tuple[str, ...],
               skip: tuple[str, ...] = ()) -> tuple[list[Entry], list[int] | None, tuple[str, ...]]:  # fmt: skip
    """Files and labels of one split: class sub-folders (sorted by name, as ImageFolder) or loose images."""
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in skip)
    per_class = {d.name: files for d in subdirs if (files := files_in(str(d), recursive=True))}
    if not per_class:
        return files_in(str(folder), recursive=False), None, ()
    classes = classes or tuple(per_class)
    if unknown := sorted(set(per_class) - set(classes)):
        raise DataError(f"{folder} has classes {unknown} that train/ lacks; use the same class folders in both")
    labels = [classes.index(c) for c, files in per_class.items() for _ in files]
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


def scan_folder(path: Path, skip: tuple[str, ...] = ()) -> tuple[Files, tuple[str, ...], Path]:
    """Every split's files and labels, the classes, and the resolved folder; `skip`: class folders to leave out."""
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; pass an image folder laid out as {LAYOUTS}")
    folder = path.resolve()
    has_split = (folder / "train").is_dir()
    train_files, train_labels, classes = scan_split(folder / "train" if has_split else folder, (), skip)
    if not train_files:
        raise DataError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)}); expected {LAYOUTS}")
    splits: Files = {"train": (train_files, train_labels)}
    if has_split and train_labels is not None and (folder / TINY_ANNOTATIONS).is_file():
        splits["test"] = scan_tiny_imagenet_val(folder, classes)
    elif has_split and (folder / "test").is_dir():
        test_files, test_labels, _ = scan_split(folder / "test", classes, skip)
        if test_files and (test_labels is None) != (train_labels is None):
            raise DataError(f"{folder}: train/ and test/ must both have class folders, or neither")
        if test_files:
            splits["test"] = (test_files, test_labels)
    return splits, classes, folder


def identity(root: Path, files: list[Entry]) -> list[Entry]:
    """(path relative to root, size, mtime_ns) per file: any edit changes the cache key."""
    return [(path[len(str(root)) + 1 :], size, mtime) for path, size, mtime in files]
