"""ImageNet layouts on tiny generated folders: ILSVRC-2012 train/val (class folders or a flat val/ with
LOC_val_solution.csv, the Kaggle tree), data.classes_file subsets (ImageNet-100 shipped), unlabelled folders."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from affssl.ablate.labels import label_free
from affssl.ablate.planning import EvalSettings
from affssl.data import DataError, Split, load_dataset
from affssl.data.imagenet import BUILTIN_LISTS, read_classes_file
from affssl.errors import UserError
from affssl.eval.splits import dataset_spec, load_eval_data
from affssl.spec import DataSpec

WNIDS = ("n01440764", "n01443537", "n01484850")  # sorted, as ImageFolder orders classes
COLOUR = {w: (40 + 80 * i, 200 - 60 * i, 30 + 100 * i) for i, w in enumerate(WNIDS)}
S = 8


def _jpeg(path: Path, wnid: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (S + 2, S), COLOUR[wnid]).save(path, quality=95)


def _train(root: Path, per_class: int = 2) -> None:
    for w in WNIDS:
        for i in range(per_class):
            _jpeg(root / "train" / w / f"{w}_{i}.JPEG", w)


def _flat_val(root: Path, csv_at: Path | None) -> list[str]:
    """val/ILSVRC2012_val_0000000k.JPEG, one per class in reverse order; the csv as Kaggle writes it."""
    rows, truth = ["ImageId,PredictionString"], []
    for k, w in enumerate(reversed(WNIDS), 1):
        image_id = f"ILSVRC2012_val_{k:08d}"
        _jpeg(root / "val" / f"{image_id}.JPEG", w)
        rows.append(f"{image_id},{w} 1 2 7 6 {w} 0 0 3 3")
        truth.append(w)
    if csv_at is not None:
        csv_at.mkdir(parents=True, exist_ok=True)
        (csv_at / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return truth


def _spec(dataset: Path, tmp_path: Path, **kw) -> DataSpec:
    return DataSpec(dataset=str(dataset), image_size_px=S, root=tmp_path / "cache", **kw)


def _names(split: Split, classes: tuple[str, ...]) -> list[str]:
    return [classes[i] for i in split.labels.tolist()]


def _colours_match(split: Split, classes: tuple[str, ...]) -> bool:
    """Each image's mean colour is its label's colour (JPEG rounding aside)."""
    mean = split.images.float().mean(dim=(2, 3))  # (N, 3)
    want = torch.tensor([COLOUR[c] for c in _names(split, classes)], dtype=torch.float32)
    return bool((mean - want).abs().max() < 4)


def test_train_and_val_class_folders(tmp_path):
    root = tmp_path / "ilsvrc"
    _train(root)
    for w in WNIDS:
        _jpeg(root / "val" / w / f"ILSVRC2012_val_{w}.JPEG", w)
    data = load_dataset(_spec(root, tmp_path))
    assert data.classes == WNIDS and len(data.train.images) == 6 and len(data.test.images) == 3
    assert _names(data.test, data.classes) == list(WNIDS)
    assert _colours_match(data.train, data.classes) and _colours_match(data.test, data.classes)


@pytest.mark.parametrize("where", ["top", "val"])
def test_flat_val_labelled_by_the_solution_csv(tmp_path, where):
    root = tmp_path / "ilsvrc"
    _train(root)
    truth = _flat_val(root, root if where == "top" else root / "val")
    (root / "test").mkdir()  # ILSVRC's unlabelled test/ is passed over for val/
    _jpeg(root / "test" / "ILSVRC2012_test_00000001.JPEG", WNIDS[0])
    data = load_dataset(_spec(root, tmp_path))
    assert _names(data.test, data.classes) == truth and _colours_match(data.test, data.classes)


@pytest.mark.parametrize("given", ["top", "cls-loc"])
def test_kaggle_tree(tmp_path, given):
    top = tmp_path / "imagenet-object-localization-challenge"
    data_root = top / "ILSVRC" / "Data" / "CLS-LOC"
    _train(data_root)
    truth = _flat_val(data_root, csv_at=top)
    data = load_dataset(_spec(top if given == "top" else data_root, tmp_path))
    assert data.classes == WNIDS and _names(data.test, data.classes) == truth


def test_editing_the_csv_changes_the_cache_key(tmp_path):
    root = tmp_path / "ilsvrc"
    _train(root)
    _flat_val(root, root)
    load_dataset(_spec(root, tmp_path))
    csv = root / "LOC_val_solution.csv"
    csv.write_text(csv.read_text().replace("n01484850 1", "n01443537 1"))  # relabel one image
    st = csv.stat()
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = load_dataset(_spec(root, tmp_path))
    assert _names(again.test, again.classes)[0] == "n01443537"
    assert len(list((tmp_path / "cache" / "decoded").glob("*.safetensors"))) == 2


def test_flat_val_without_labels_is_one_line(tmp_path):
    root = tmp_path / "ilsvrc"
    _train(root)
    _flat_val(root, csv_at=None)
    with pytest.raises(DataError, match=r"train/ and val/ must both have class folders.*LOC_val_solution.csv"):
        load_dataset(_spec(root, tmp_path))
    _flat_val(root, root)
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01484850 1 2 3 4\n")
    with pytest.raises(DataError, match=r"2 val image\(s\) \(e.g. ILSVRC2012_val_00000002\) have no row in"):
        load_dataset(_spec(root, tmp_path))


def test_classes_file_keeps_those_classes_in_train_and_val(tmp_path):
    root = tmp_path / "ilsvrc"
    _train(root)
    truth = _flat_val(root, root)
    listing = tmp_path / "two.txt"
    listing.write_text(f"# two of three\n{WNIDS[2]}\n\n{WNIDS[0]}  # comment\n{WNIDS[0]}\n")
    data = load_dataset(_spec(root, tmp_path, classes_file=listing))
    assert data.classes == (WNIDS[0], WNIDS[2])  # folder order (sorted), as ImageFolder on the subset
    assert _names(data.train, data.classes) == [WNIDS[0]] * 2 + [WNIDS[2]] * 2
    assert _names(data.test, data.classes) == [w for w in truth if w != WNIDS[1]]
    assert _colours_match(data.train, data.classes) and _colours_match(data.test, data.classes)


def test_classes_file_errors_are_one_line(tmp_path):
    root = tmp_path / "ilsvrc"
    _train(root)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{WNIDS[0]}\nn99999999\n")
    with pytest.raises(DataError, match=r"1 class\(es\) of data.classes_file \(e.g. n99999999\) have no image folder"):
        load_dataset(_spec(root, tmp_path, classes_file=listing))
    with pytest.raises(DataError, match=r"cannot be read .* or one of: imagenet100"):
        load_dataset(_spec(root, tmp_path, classes_file=tmp_path / "absent.txt"))
    with pytest.raises(DataError, match="'digits' is not one"):
        load_dataset(DataSpec(classes_file=listing, root=tmp_path / "cache"))
    flat = tmp_path / "flat"
    _jpeg(flat / "a.jpg", WNIDS[0])
    with pytest.raises(DataError, match=r"selects class folders, and .* has none"):
        load_dataset(_spec(flat, tmp_path, classes_file=listing))


def test_imagenet100_is_the_cmc_list():
    names = read_classes_file(Path("imagenet100"))
    assert len(names) == 100 == len(set(names)) and all(n[0] == "n" and len(n) == 9 for n in names)
    assert names[:3] == ("n02869837", "n01749939", "n02488291") and names[-1] == "n02090622"
    assert BUILTIN_LISTS["imagenet100"].is_file()


def test_eval_keeps_the_runs_classes_file(tmp_path):
    class Source:
        spec = type("S", (), {"data": _spec(tmp_path, tmp_path, classes_file=Path("imagenet100"))})()
        image_size_px = S

    assert dataset_spec(Source, None).classes_file == Path("imagenet100")
    assert dataset_spec(Source, "cifar10").classes_file is None  # another data set: its own classes


def test_unlabelled_folder_loads_and_label_probes_stop_in_one_line(tmp_path):
    flat = tmp_path / "flat"
    for i in range(6):
        _jpeg(flat / f"{i}.jpg", WNIDS[i % 3])
    data = load_dataset(_spec(flat, tmp_path))
    assert data.train.labels is None and data.test is None and data.classes == ()

    class Source:
        spec = type("S", (), {"data": _spec(flat, tmp_path)})()
        image_size_px = S
        path = flat

    with pytest.raises(DataError, match=r"is unlabelled, and this probe needs class labels.*affssl eval affine"):
        load_eval_data(Source, data=data)
    unlabelled = load_eval_data(Source, data=data, need_labels=False)  # the equivariance probe's data
    assert unlabelled.test_carved and unlabelled.train.labels is None


def test_ablate_skips_the_label_probes_for_unlabelled_data(tmp_path):
    flat, labelled = tmp_path / "flat", tmp_path / "ilsvrc"
    _jpeg(flat / "0.jpg", WNIDS[0])
    _train(labelled, per_class=1)
    every = EvalSettings(protocols=("linear", "knn", "affine"), curve=True, curve_points=2)
    kept, line = label_free(every, str(flat))
    assert kept == replace(every, protocols=("affine",), curve=False, curve_points=None)
    assert line == f"data set {flat} is unlabelled: the linear and knn probe(s) need labels, skipped"
    kept, line = label_free(EvalSettings(), str(flat))
    assert kept.protocols == () and line.endswith(
        "skipped; the runs only pretrain (--eval affine probes equivariance without labels)"
    )
    for dataset in (str(labelled), "digits", str(tmp_path / "absent")):  # absent: the loader's own line, later
        assert label_free(every, dataset) == (every, None)
    with pytest.raises(UserError, match=r"--eval-dataset .*flat is unlabelled and the linear probe needs class labels"):
        label_free(EvalSettings(datasets=(None, str(flat))), str(labelled))
