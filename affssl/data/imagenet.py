"""ILSVRC-2012 as distributed: the Kaggle tree, a flat val/ labelled by LOC_val_solution.csv, class lists.

The Kaggle download (imagenet-object-localization-challenge) holds ILSVRC/Data/CLS-LOC/{train,val,test}
and, at its top, LOC_val_solution.csv: `ImageId,PredictionString` rows whose PredictionString starts
with the wnid ("n01751748 x y x y …"). The csv is looked for in PATH, PATH/val and, for PATH =
…/ILSVRC/Data/CLS-LOC, three folders up. `data.classes_file` names the class folders to keep, one
per line (`#` starts a comment); `imagenet100` is the CMC paper's ImageNet-100 list shipped here
(affssl/data/imagenet100.txt, from github.com/HobbitLong/CMC imagenet100.txt).
"""

from __future__ import annotations

from pathlib import Path

from affssl.data.dataset import DataError
from affssl.data.decode import Entry

KAGGLE_TREE = Path("ILSVRC") / "Data" / "CLS-LOC"
VAL_SOLUTION = "LOC_val_solution.csv"
BUILTIN_LISTS = {"imagenet100": Path(__file__).with_name("imagenet100.txt")}


def data_folder(folder: Path) -> Path:
    """The folder holding train/: the Kaggle download's ILSVRC/Data/CLS-LOC when given its top, else folder."""
    return folder / KAGGLE_TREE if (folder / KAGGLE_TREE / "train").is_dir() else folder


def val_solution(folder: Path) -> Path | None:
    """LOC_val_solution.csv for the data folder: in it, in its val/, or at the top of the Kaggle tree."""
    places = [folder / VAL_SOLUTION, folder / "val" / VAL_SOLUTION]
    if folder.parts[-3:] == KAGGLE_TREE.parts:
        places.append(folder.parents[2] / VAL_SOLUTION)
    return next((p for p in places if p.is_file()), None)


def label_val(files: list[Entry], csv: Path, classes: tuple[str, ...], subset: bool) -> tuple[list[Entry], list[int]]:
    """Flat val images labelled by the csv (file stem = ImageId); with `subset`, other classes' images are left out."""
    wnid: dict[str, str] = {}
    for n, line in enumerate(csv.read_text().splitlines(), 1):
        image_id, _, prediction = line.strip().partition(",")
        if (n == 1 and image_id == "ImageId") or not line.strip():
            continue
        if not prediction.split():
            raise DataError(f"{csv} line {n} is not 'ImageId,wnid x y x y …'; restore the file")
        wnid[image_id] = prediction.split()[0]
    kept, labels, unlabelled, unknown, index = [], [], [], [], {c: i for i, c in enumerate(classes)}
    for entry in files:
        stem = Path(entry[0]).stem
        if (w := wnid.get(stem)) is None:
            unlabelled.append(stem)
        elif w in index:
            kept.append(entry)
            labels.append(index[w])
        elif not subset:
            unknown.append(f"{stem} ({w})")
    if unlabelled or unknown:
        why = f"have no row in {csv}" if unlabelled else "name a class that train/ lacks"
        raise DataError(f"{len(unlabelled or unknown)} val image(s) (e.g. {(unlabelled or unknown)[0]}) {why}; "
                        f"use the {VAL_SOLUTION} of this val/ and train/")  # fmt: skip
    return kept, labels


def read_classes_file(given: Path) -> tuple[str, ...]:
    """The class names a classes file lists, in its order, once each; `imagenet100` is the shipped list."""
    path = given if given.is_file() or str(given) not in BUILTIN_LISTS else BUILTIN_LISTS[str(given)]
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise DataError(
            f"data.classes_file {str(given)!r} cannot be read ({err.strerror or err}); pass a text file "
            f"with one class folder name per line, or one of: {', '.join(BUILTIN_LISTS)}"
        ) from None
    names = [line.split("#")[0].strip() for line in lines]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise DataError(f"data.classes_file {str(given)!r} lists no class; put one class folder name per line")
    return tuple(names)
