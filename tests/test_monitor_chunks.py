"""The online monitor on chunk storage: the same images as the tensor storage's, training untouched, scores logged.

Tiny generated JPEG folders (tests/test_chunks.py's make_folder); the oracle is the tensor storage: the same
picks of the same folder must give the same pixels, and a folder of S × S images (which trains to the same
weights on both storages) the same scores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("litdata")

from test_chunks import assert_same_tensors, make_folder, spec_for

from affssl import monitor, runs
from affssl.data import load_dataset, storage
from affssl.engine import pretrain

WATCHED = ("train.monitor_images=20", "train.monitor_queries=12")
COMPONENTS = ("rotation", "scale", "shear", "translation")
MONITOR_FIELDS = ["monitor_knn_top1", *(f"monitor_r2_batch_{c}" for c in COMPONENTS),
                  *(f"monitor_r2_{c}" for c in COMPONENTS), "monitor_time_s"]  # fmt: skip


def with_test_split(root: Path, per_class: int = 8, square: int | None = None) -> Path:
    """root/train/c{0,1} as make_folder makes it, and root/test/c{0,1} of other images alike."""
    make_folder(root, square=square)
    shutil.move(make_folder(root.parent / f"{root.name}-test", per_class, square, seed=1) / "train", root / "test")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("jpegs")
    return {"test split": with_test_split(base / "split"), "held out": make_folder(base / "flat")}


def both_subsets(spec) -> tuple[monitor.Subset, monitor.Subset]:
    """(tensor storage's subset, chunk storage's) for the same spec."""
    tensor = monitor.pick(load_dataset(spec.data, seed=spec.train.seed), spec)
    chunk_spec, feed = storage.prepare(spec.model_copy(update={"data": spec.data.model_copy(
        update={"storage": "chunks"})}), torch.device("cpu"), None, False)  # fmt: skip
    return tensor, monitor.pick_chunks(feed, chunk_spec)


@pytest.mark.parametrize(
    ("layout", "extra"),
    [("test split", ("data.workers=1",)), ("held out", ("data.limit=40", "data.workers=0"))],
    ids=["test-split-1-worker", "held-out-limit-0-workers"],
)
def test_chunk_subset_has_the_tensor_storages_pixels_for_the_same_picks(tmp_path, folders, layout, extra):
    # Images of 12–28 px, any aspect: the square centre crop at 16 px is the tensor cache's transform on both.
    spec = spec_for(folders[layout], tmp_path / "cache", *WATCHED, *extra)
    tensor, chunks = both_subsets(spec)
    assert chunks.setup_s > 0 and tensor.setup_s == 0
    for part in ("bank", "queries"):
        t, c = getattr(tensor, part), getattr(chunks, part)
        assert len(c) == len(t) == (20 if part == "bank" else 12)
        t_images, c_images = t.source[t.index], c.source[c.index]  # (n, 3, 16, 16) uint8 each
        assert c_images.shape == (len(t), 3, 16, 16) and torch.equal(c_images, t_images), part
        assert torch.equal(c.labels, t.labels), part
    assert torch.equal(chunks.phi, tensor.phi) and chunks.n_classes == tensor.n_classes == 2
    if layout == "held out":  # the queries are training images kept out of the bank, as on the tensor storage
        assert tensor.queries.source is tensor.bank.source


def test_watching_leaves_chunk_training_bit_identical(tmp_path, folders):
    """Design rule 17 on chunks: the same checkpoints with the monitor as without it (decoding its images included)."""
    common = ["data.storage=chunks", "data.workers=1", "train.checkpoint_every=1", "method.name=byol"]
    cache = tmp_path / "cache"
    plain = pretrain(spec_for(folders["test split"], cache, *common, "train.monitor_every=0"), tmp_path / "plain",
                     show_progress=False)  # fmt: skip
    pretrain(spec_for(folders["test split"], cache, *common, *WATCHED), tmp_path / "seen", show_progress=False)
    for name in ("epoch-0001.safetensors", plain.name):
        assert_same_tensors(tmp_path / "plain" / name, tmp_path / "seen" / name)
    epochs = [r for r in runs.read_metrics(tmp_path / "seen") if r["kind"] == "epoch"]
    assert [sorted(k for k in r if k.startswith("monitor_")) for r in epochs] == [MONITOR_FIELDS] * 2
    assert not any(k.startswith("monitor_") for r in runs.read_metrics(tmp_path / "plain") for k in r)


def test_chunk_scores_in_metrics_equal_the_tensor_storages(tmp_path, capsys):
    # S × S images train to the same weights on both storages, so the monitor must score them alike, exactly.
    folder = with_test_split(tmp_path / "square", square=16)
    for kind in ("tensor", "chunks"):
        pretrain(spec_for(folder, tmp_path / "cache", f"data.storage={kind}", "data.workers=0", "train.epochs=2",
                          *WATCHED), tmp_path / kind, show_progress=kind == "chunks")  # fmt: skip
    scores = {kind: [{k: v for k, v in r.items() if k.startswith("monitor_") and k != "monitor_time_s"}
                     for r in runs.read_metrics(tmp_path / kind) if r["kind"] == "epoch"]
              for kind in ("tensor", "chunks")}  # fmt: skip
    assert len(scores["chunks"]) == 2 and all(len(s) == len(MONITOR_FIELDS) - 1 for s in scores["chunks"])
    assert 0 <= scores["chunks"][-1]["monitor_knn_top1"] <= 100
    assert scores["chunks"] == scores["tensor"]
    err = capsys.readouterr().err
    assert "online monitor: 20 + 12 images decoded in " in err and "no online monitor" not in err


def test_unlabelled_chunks_have_no_monitor_and_say_so_once(tmp_path, capsys):
    folder = make_folder(tmp_path / "imgs", per_class=12)
    for jpg in list((folder / "train").rglob("*.jpg")):  # class folders gone: loose images, no labels
        jpg.rename(folder / "train" / f"{jpg.parent.name}-{jpg.name}")
    for d in ("c0", "c1"):
        (folder / "train" / d).rmdir()
    run = tmp_path / "run"
    pretrain(spec_for(folder, tmp_path / "cache", "data.storage=chunks", "data.workers=0", "train.epochs=1"), run)
    assert capsys.readouterr().err.count(f"note: data set {folder} is unlabelled: no online monitor (its kNN") == 1
    assert not any(k.startswith("monitor_") for r in runs.read_metrics(run) for k in r)


@pytest.mark.parametrize("subset", [False, True], ids=["all-classes", "classes-file"])
def test_queries_come_from_the_test_split_the_tensor_storage_finds(tmp_path, subset):
    # ILSVRC-2012 as Kaggle ships it: a flat val/ labelled by the csv at the top, train/ in ILSVRC/Data/CLS-LOC.
    from test_imagenet import WNIDS, _flat_val, _train

    from affssl.data.folders import scan_folder
    from affssl.data.imagenet import KAGGLE_TREE, read_classes_file
    from affssl.data.monitorset import find_test_split

    top = tmp_path / "kaggle"
    _train(top / KAGGLE_TREE)
    _flat_val(top / KAGGLE_TREE, csv_at=top)
    extra = []
    if subset:
        (tmp_path / "two.txt").write_text(f"{WNIDS[2]}\n{WNIDS[0]}\n")
        extra = [f"data.classes_file={tmp_path / 'two.txt'}"]
    spec = spec_for(top, tmp_path / "cache", *extra)
    keep = read_classes_file(spec.data.classes_file) if subset else None
    splits, classes, _ = scan_folder(top, keep=keep)  # what the tensor storage loads
    files, labels = find_test_split(spec.data, classes)
    assert files == splits["test"][0] and labels.tolist() == splits["test"][1]
    assert len(files) == (2 if subset else 3)
