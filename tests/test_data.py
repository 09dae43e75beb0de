"""affssl.data: digits split, stratified subsets, batches, image folders, the decode cache, torchvision."""

from __future__ import annotations

import os
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from affssl.data import DataError, Split, batches, cache_dir, load_dataset, sources, subset
from affssl.spec import DataSpec

S = 16  # image size for folder tests


def _spec(dataset: str | Path, tmp_path: Path, **kw) -> DataSpec:
    return DataSpec(dataset=str(dataset), image_size_px=kw.pop("size", S), root=tmp_path / "cache", **kw)


def _rgb(seed: int, size: tuple[int, int] = (S, S)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _pil_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 as PIL decodes the file: the oracle for lossless formats."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """train/{cat,dog} and test/{cat,dog}: RGB and grey PNG, RGB and grey JPEG, a BMP, one larger image."""
    root = tmp_path / "imgs"
    for part, classes in (("train", ("dog", "cat")), ("test", ("cat", "dog"))):
        for c, name in enumerate(classes):
            d = root / part / name
            d.mkdir(parents=True)
            seed = 10 * c + (part == "test")
            Image.fromarray(_rgb(seed)).save(d / "a_rgb.png")
            Image.fromarray(_rgb(seed + 1)[..., 0]).save(d / "b_grey.PNG")  # mode L, upper-case extension
            Image.fromarray(_rgb(seed + 2)).save(d / "c_rgb.jpg", quality=95)
            Image.fromarray(_rgb(seed + 3)[..., 1]).save(d / "d_grey.jpeg")
            (d / "notes.txt").write_text("not an image")
    Image.fromarray(_rgb(5)).save(root / "train" / "cat" / "e_rgb.bmp")
    Image.fromarray(_rgb(6, (40, 24))).save(root / "train" / "dog" / "f_big.png")
    return root


# ---------------------------------------------------------------------------------------------
# digits, subset, batches


def test_digits_shapes_and_fixed_split(tmp_path):
    a = load_dataset(_spec("digits", tmp_path, size=32), seed=0)
    b = load_dataset(_spec("digits", tmp_path, size=32, cache=False), seed=7)
    assert a.name == "digits" and a.classes == tuple("0123456789")
    assert a.train.images.shape == (1438, 3, 32, 32) and a.test.images.shape == (359, 3, 32, 32)
    for split in (a.train, a.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.labels.min() == 0 and split.labels.max() == 9
        assert torch.equal(split.images[:, 0], split.images[:, 2])  # grey replicated
    assert a.train.images.max() > 200  # 0..16 scaled to 0..255
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert (a.test.labels.bincount() - 0.2 * a.train.labels.bincount() * 1797 / 1438).abs().max() < 1.5
    [cached] = (tmp_path / "cache" / "decoded").glob("*.safetensors")
    assert cached.stat().st_size > 1797 * 3 * 32 * 32


def test_limit_is_stratified_and_seeded(tmp_path):
    one = load_dataset(_spec("digits", tmp_path, limit=100), seed=1)
    again = load_dataset(_spec("digits", tmp_path, limit=100), seed=1)
    other = load_dataset(_spec("digits", tmp_path, limit=100), seed=2)
    assert len(one.train.images) == 100 and one.test.images.shape[0] == 359  # test untouched
    assert set(one.train.labels.bincount().tolist()) <= {9, 10, 11}
    assert torch.equal(one.train.images, again.train.images)
    assert not torch.equal(one.train.images, other.train.images)


def test_subset_exact_counts_and_deterministic():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    split = Split(torch.arange(100).view(100, 1, 1, 1).to(torch.uint8), labels)
    picked = subset(split, 10, seed=3)
    assert picked.labels.bincount().tolist() == [5, 3, 2]
    assert torch.equal(picked.labels, labels[picked.images.flatten().long()])  # images follow labels
    assert picked.images.flatten().diff().gt(0).all()  # original order kept
    assert torch.equal(picked.images, subset(split, 10, seed=3).images)
    assert not torch.equal(picked.images, subset(split, 10, seed=4).images)
    # largest remainder: quotas 2.5, 1.5, 1.0 → floors 2, 1, 1; the tie goes to the lower class
    small = Split(torch.zeros(10, 3, 1, 1, dtype=torch.uint8), torch.tensor([0] * 5 + [1] * 3 + [2] * 2))
    assert subset(small, 5, seed=0).labels.bincount().tolist() == [3, 1, 1]
    assert subset(small, 10, seed=0) is small and subset(small, 99, seed=0) is small


def test_subset_unlabelled():
    split = Split(torch.arange(50).view(50, 1, 1, 1).to(torch.uint8), None)
    picked = subset(split, 7, seed=0)
    assert picked.labels is None and picked.images.flatten().unique().numel() == 7
    assert torch.equal(picked.images, subset(split, 7, seed=0).images)


def test_batches_cover_a_permutation():
    full = list(batches(10, 3, torch.Generator().manual_seed(0), drop_last=False))
    assert [len(b) for b in full] == [3, 3, 3, 1] and all(b.dtype == torch.int64 for b in full)
    assert torch.equal(torch.cat(full), torch.randperm(10, generator=torch.Generator().manual_seed(0)))
    dropped = list(batches(10, 3, torch.Generator().manual_seed(0)))
    assert [len(b) for b in dropped] == [3, 3, 3] and torch.equal(torch.cat(dropped), torch.cat(full)[:9])
    assert list(batches(2, 3, torch.Generator())) == []
    assert [len(b) for b in batches(9, 3, torch.Generator())] == [3, 3, 3]


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "env"))
    assert cache_dir(DataSpec(root=tmp_path / "r")) == tmp_path / "r"
    assert cache_dir(DataSpec()) == tmp_path / "env"
    monkeypatch.delenv("AFFSSL_CACHE")
    assert cache_dir(DataSpec()) == Path.home() / ".cache" / "affssl"


# ---------------------------------------------------------------------------------------------
# image folders


def test_folder_with_splits(folder, tmp_path):
    ds = load_dataset(_spec(folder, tmp_path, cache=False))
    assert ds.name == str(folder) and ds.classes == ("cat", "dog")
    assert ds.train.images.shape == (10, 3, S, S) and ds.test.images.shape == (8, 3, S, S)
    assert ds.train.labels.tolist() == [0] * 5 + [1] * 5 and ds.test.labels.tolist() == [0] * 4 + [1] * 4
    cat = sorted((folder / "train" / "cat").iterdir())  # a_rgb.png, b_grey.PNG, c_rgb.jpg, d_grey.jpeg, e_rgb.bmp
    for i in (0, 1, 4):  # lossless: equal to PIL's decoding, grey replicated to 3 channels
        assert torch.equal(ds.train.images[i], _pil_rgb(cat[i])), cat[i].name
    for i in (2, 3):  # JPEG: libjpeg in both, up to decoder rounding
        assert (ds.train.images[i].int() - _pil_rgb(cat[i]).int()).abs().max() <= 2
    assert torch.equal(ds.train.images[3, 0], ds.train.images[3, 1])
    # 40×24 → short side to 16 (26×16), centre crop 16×16
    big = ds.train.images[9]
    want = torchvision.transforms.v2.functional.resize(_pil_rgb(folder / "train/dog/f_big.png"), S, antialias=True)
    assert torch.equal(big, torchvision.transforms.v2.functional.center_crop(want, [S, S]))


def test_folder_of_classes_without_splits(folder, tmp_path):
    ds = load_dataset(_spec(folder / "train", tmp_path, cache=False), progress=True)
    assert ds.classes == ("cat", "dog") and ds.test is None and len(ds.train.labels) == 10


def test_flat_folder_is_unlabelled(folder, tmp_path):
    flat = folder / "train" / "cat"
    ds = load_dataset(_spec(flat, tmp_path, limit=3), seed=0)
    assert ds.train.labels is None and ds.test is None and ds.classes == ()
    assert ds.train.images.shape == (3, 3, S, S)


def test_corrupt_files_are_reported_together(folder, tmp_path):
    (folder / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 40)
    (folder / "test" / "cat" / "garbage.png").write_bytes(b"not a png")
    (folder / "test" / "cat" / "empty.jpg").write_bytes(b"")
    whole = (folder / "test" / "dog" / "c_rgb.jpg").read_bytes()
    (folder / "test" / "dog" / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(DataError, match=r"4 of 22 images in .* more than data.max_bad_frac 0.001") as err:
        load_dataset(_spec(folder, tmp_path))
    for name in ("broken.jpg", "garbage.png", "empty.jpg", "truncated.jpg"):
        assert name in str(err.value)
    assert "remove or replace" in str(err.value)
    assert not (tmp_path / "cache" / "decoded").exists()  # nothing cached


def test_unreadable_images_within_max_bad_frac_are_left_out_and_listed(folder, tmp_path):
    # The issue: training skipped such an image, then every eval and --preview of the same folder stopped.
    (folder / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 40)
    (folder / "test" / "cat" / "empty.jpg").write_bytes(b"")
    whole = load_dataset(_spec(folder, tmp_path, max_bad_frac=0.1))  # 2 of 20 images
    assert [Path(p).name for p, _ in whole.skipped] == ["broken.jpg", "empty.jpg"]
    assert len(whole.train.images) == 10 and len(whole.test.images) == 8  # the readable ones, labels kept in step
    assert whole.train.labels.tolist() == [0] * 5 + [1] * 5  # cat 5 (with the BMP), dog 5 (broken.jpg left out)
    with pytest.raises(DataError, match="2 of 20 images"):  # the cached set is checked against this command's limit
        load_dataset(_spec(folder, tmp_path, max_bad_frac=0.05))
    known = tuple(p for p, _ in whole.skipped)  # a run's recorded list (data.bad_first): not counted again
    again = load_dataset(_spec(folder, tmp_path, max_bad_frac=0.0, bad_first=known))
    assert again.skipped == whole.skipped and torch.equal(again.train.images, whole.train.images)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*neither a known data set"):
        load_dataset(_spec(tmp_path / "nowhere", tmp_path))
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"holds no images.*PATH/train/<class>"):
        load_dataset(_spec(tmp_path / "empty", tmp_path))


# ---------------------------------------------------------------------------------------------
# the decode cache


def _refuse(*args, **kwargs):
    raise AssertionError("decoded although the cache should have answered")


def test_cache_hit_then_invalidated_by_an_edit(folder, tmp_path, monkeypatch):
    spec = _spec(folder, tmp_path)
    first = load_dataset(spec)
    [cached] = (tmp_path / "cache" / "decoded").glob("*.safetensors")
    with monkeypatch.context() as m:
        m.setattr(sources, "decode_files", _refuse)
        second = load_dataset(spec)
        for a, b in ((first.train, second.train), (first.test, second.test)):
            assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert second.classes == first.classes
        touched = folder / "test" / "dog" / "a_rgb.png"
        st = touched.stat()
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        with pytest.raises(AssertionError, match="decoded although"):
            load_dataset(spec)
    load_dataset(spec)
    assert len(list((tmp_path / "cache" / "decoded").glob("*.safetensors"))) == 2
    assert cached.exists()


def test_corrupt_cache_is_rewritten(folder, tmp_path, monkeypatch):
    spec = _spec(folder, tmp_path)
    first = load_dataset(spec)
    [cached] = (tmp_path / "cache" / "decoded").glob("*.safetensors")
    head = cached.read_bytes()[:100]
    cached.unlink()  # a new file: truncating in place would pull the pages from under `first`'s map
    cached.write_bytes(head)
    again = load_dataset(spec)
    assert torch.equal(first.train.images, again.train.images)
    monkeypatch.setattr(sources, "decode_files", _refuse)
    assert torch.equal(load_dataset(spec).train.images, first.train.images)
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temp files left


# ---------------------------------------------------------------------------------------------
# torchvision data sets (never the network)


class _Offline:
    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        if download:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")


class _FakeMNIST:
    classes = ("0 - zero", "1 - one", "2 - two")

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        n = 12 if train else 6
        self.data = torch.arange(n * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 28, 28)
        self.targets = torch.arange(n) % 3


def test_torchvision_offline_points_at_dataset_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _Offline)
    with pytest.raises(DataError, match=r"could not be downloaded.*--dataset PATH"):
        load_dataset(_spec("cifar10", tmp_path))


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("cifar10", "cifar10/cifar-10-batches-py/ with data_batch_1"),
        ("mnist", "mnist/MNIST/raw/ with train-images-idx3-ubyte"),
    ],
)
def test_offline_names_the_files_to_put_in_the_cache(name, layout, tmp_path, monkeypatch):
    # The issue: offline cifar10 never said which file layout to put under ~/.cache/affssl.
    monkeypatch.setenv("AFFSSL_OFFLINE", "1")
    monkeypatch.setattr(torchvision.datasets, sources.TORCHVISION[name], _Offline)
    with pytest.raises(DataError) as err:
        load_dataset(_spec(name, tmp_path))
    assert f"AFFSSL_OFFLINE=1); put {tmp_path / 'cache' / layout}" in str(err.value), err.value
    assert set(sources.OFFLINE_FILES) == set(sources.TORCHVISION)  # every torchvision set has its layout


def test_torchvision_arrays_become_rgb_uint8(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "MNIST", _FakeMNIST)
    ds = load_dataset(_spec("mnist", tmp_path, size=32))
    assert ds.classes == ("0 - zero", "1 - one", "2 - two")
    assert ds.train.images.shape == (12, 3, 32, 32) and ds.test.images.shape == (6, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and torch.equal(ds.train.images[:, 0], ds.train.images[:, 1])
    assert ds.train.labels.tolist() == [0, 1, 2] * 4
    native = load_dataset(_spec("mnist", tmp_path, size=28, cache=False))
    assert torch.equal(native.train.images[:, 0], _FakeMNIST("").data)


# ---------------------------------------------------------------------------------------------
# the real CIFAR-10 image folder (from ../shared/data; skips when absent)


@pytest.mark.slow  # extracting 60,000 files plus decoding them: > 20 s on a 2-core machine
def test_cifar10_jpeg_folder(cifar10_dir, tmp_path):
    start = time.perf_counter()
    ds = load_dataset(_spec(cifar10_dir, tmp_path, size=32, cache=False))
    print(f"decoded 60,000 CIFAR-10 JPEGs in {time.perf_counter() - start:.1f} s")
    assert ds.train.images.shape == (50_000, 3, 32, 32) and ds.test.images.shape == (10_000, 3, 32, 32)
    assert ds.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert ds.train.labels.bincount().tolist() == [5000] * 10 and ds.test.labels.bincount().tolist() == [1000] * 10
    first = cifar10_dir / "train" / "airplane" / "0000.jpg"
    assert (ds.train.images[0].int() - _pil_rgb(first).int()).abs().max() <= 2


# ---------------------------------------------------------------------------------------------
# The paper's evaluation sets: a Tiny ImageNet folder, Caltech-101


def _tiny_imagenet(root: Path) -> Path:
    """A miniature of tiny-imagenet-200: train/<wnid>/images/*.JPEG (+ boxes), val/images + annotations, test/."""
    wnids = ("n02", "n01")  # out of order on purpose: classes sort by name
    for c, wnid in enumerate(wnids):
        d = root / "train" / wnid / "images"
        d.mkdir(parents=True)
        for k in range(3):
            Image.fromarray(_rgb(10 * c + k)).save(d / f"{wnid}_{k}.JPEG", quality=95)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t8\t8\n")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for k, wnid in enumerate(("n01", "n02", "n02")):
        Image.fromarray(_rgb(100 + k)).save(root / "val" / "images" / f"val_{k}.JPEG", quality=95)
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "test" / "images").mkdir(parents=True)  # unlabelled in the real archive: ignored
    Image.fromarray(_rgb(200)).save(root / "test" / "images" / "test_0.JPEG")
    return root


def test_tiny_imagenet_folder_uses_val_annotations_as_the_test_split(tmp_path):
    root = _tiny_imagenet(tmp_path / "tiny-imagenet-200")
    ds = load_dataset(_spec(root, tmp_path))
    assert ds.classes == ("n01", "n02")
    assert ds.train.images.shape == (6, 3, S, S) and ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.test.images.shape == (3, 3, S, S) and ds.test.labels.tolist() == [0, 1, 1]
    expected = torch.from_numpy(np.array(Image.open(root / "val/images/val_1.JPEG").convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(ds.test.images[1], expected)  # 16 px JPEG at 16 px: PIL's decode, unresized
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\nval_1.JPEG\tn09\n")
    with pytest.raises(DataError, match="no annotation naming a train/ class"):
        load_dataset(_spec(root, tmp_path, cache=False))


def test_caltech101_offline_is_one_line_naming_the_folder_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_dataset(_spec("caltech101", tmp_path))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "cache" / "caltech101" / "101_ObjectCategories") in message
    assert "https://data.caltech.edu/records/mzrjq-6wc02" in message and "AFFSSL_OFFLINE" in message


def test_caltech101_is_a_class_folder_without_the_background_class(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_OFFLINE", "1")
    folder = tmp_path / "cache" / "caltech101" / "101_ObjectCategories"
    for c, name in enumerate(("accordion", "BACKGROUND_Google", "airplanes")):
        (folder / name).mkdir(parents=True)
        Image.fromarray(_rgb(c, (30, 20))).save(folder / name / "image_0001.jpg")
    ds = load_dataset(_spec("caltech101", tmp_path, size=8))
    assert ds.classes == ("accordion", "airplanes") and ds.test is None  # probes carve a test split
    assert ds.train.images.shape == (2, 3, 8, 8) and ds.train.labels.tolist() == [0, 1]


def test_torchvision_download_is_not_attempted_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_OFFLINE", "1")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _Offline)
    with pytest.raises(DataError, match="downloads are off"):
        load_dataset(_spec("cifar10", tmp_path))
