"""`pretrain --preview`: the first batch's images, views and warps, exactly as training computes them, drawn."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from affssl import affine, augment, learner, preview
from affssl.cli import app
from affssl.data import batches, load_dataset
from affssl.engine import pretrain
from affssl.spec import load_spec

TINY = ["backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "data.limit=64", "train.epochs=1",
        "train.precision=fp32", "train.seed=5"]  # fmt: skip


def test_the_preview_is_what_the_first_training_step_sees(tmp_path, monkeypatch):
    spec = load_spec("default", TINY)
    shown = preview.first_batch(spec, load_dataset(spec.data, seed=spec.train.seed), n=6)
    seen: dict[str, torch.Tensor] = {}
    views, warp = augment.views, affine.warp

    def record_views(x, spec_, gen):
        out = views(x, spec_, gen)
        seen.setdefault("stored", x)
        seen.setdefault("view1", out[0])
        seen.setdefault("view2", out[1])
        return out

    def record_warp(x, phi, spec_):
        out = warp(x, phi, spec_)
        seen.setdefault("phi", phi)
        seen.setdefault("warped", out)
        return out

    monkeypatch.setattr(learner.augment, "views", record_views)
    monkeypatch.setattr(affine, "warp", record_warp)  # the block calls affine.warp
    pretrain(spec, tmp_path / "run", show_progress=False)
    assert shown.stored.equal(seen["stored"][:6].float() / 255)
    for name in ("view1", "view2", "phi", "warped"):
        assert getattr(shown, name).equal(seen[name][:6]), name
    # the warped panel is view 1 warped by the φ printed under it
    assert shown.warped.equal(warp(shown.view1, shown.phi, spec.affine))
    assert shown.local == ()


def test_cli_writes_the_png_and_prints_phi_without_creating_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = [a for item in TINY for a in ("--set", item)]
    result = CliRunner().invoke(app, ["pretrain", *flags, "--preview", "first.png", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png"]  # no run folder, no training
    spec = load_spec("default", TINY)
    shown = preview.first_batch(spec, load_dataset(spec.data, seed=spec.train.seed))
    assert Image.open(tmp_path / "first.png").size == preview.figure_size_px(shown) == (600, 1580)
    printed = " ".join(result.output.split())
    for phi in shown.phi:  # the φ of each row, as written under its panel
        assert " ".join(preview.phi_text(phi).split()) in printed


def test_no_warped_column_without_the_module_and_a_column_per_further_view(tmp_path, monkeypatch):
    spec = load_spec("default", [*TINY, "affine.enabled=false"])
    data = load_dataset(spec.data, seed=spec.train.seed)
    off = preview.first_batch(spec, data, n=2)
    assert off.warped is None and [c for c, _ in preview.columns(off)] == ["stored", "view 1", "view 2"]
    spec = load_spec("default", [*TINY, "augment.local_crops=2", "augment.local_size_px=8"])
    shown = preview.first_batch(spec, data, n=2)
    names = [c for c, _ in preview.columns(shown)]
    assert names == ["stored", "view 1", "view 2", "view 1 warped (φ)", "local crop 1", "local crop 2"]
    assert shown.local[0].shape == (2, 3, 8, 8)
    # the local crops are the learner's: drawn after both global views from the same generator
    from affssl.streams import generator

    cpu = torch.device("cpu")
    index = next(
        batches(data.train.images.shape[0], spec.train.batch_size, generator(spec.train.seed, "order", 0, cpu))
    )
    batch = data.train.images[index]  # (B, C, S, S) the engine's first batch
    g = generator(spec.train.seed, "views", 0, cpu)
    augment.views(batch, spec.augment, g)
    every = augment.local_views(batch, spec.augment, g)  # (2·B, C, 8, 8)
    B = batch.shape[0]
    assert shown.local[0].equal(every[:2]) and shown.local[1].equal(every[B : B + 2])
    path = preview.draw(shown, tmp_path / "p.png", "title")
    assert Image.open(path).size == preview.figure_size_px(shown) == (900, 440)


def test_on_chunks_the_preview_crops_from_the_whole_images_as_training_does(tmp_path, monkeypatch):
    # The issue: on the chunks storage --preview showed the tensor cache's squares, not what training crops.
    pytest.importorskip("litdata")
    from test_chunks import make_folder

    from affssl.data import storage

    folder = make_folder(tmp_path / "jpegs", per_class=8)  # 12–28 px images of random aspect
    spec = load_spec("default", [*TINY, f"data.dataset={folder}", f"data.root={tmp_path / 'cache'}",
                                 "data.storage=chunks", "data.workers=0", "train.batch_size=8",
                                 "data.limit=16"])  # fmt: skip
    cpu = torch.device("cpu")
    resolved, feed = storage.prepare(spec, cpu, None, progress=False)
    shown = preview.first_chunk_batch(resolved, feed, n=4)
    seen: dict[str, torch.Tensor] = {}
    views = augment.views

    def record_views(x, spec_, gen, sizes=None, size_px=None):
        out = views(x, spec_, gen, sizes, size_px)
        seen.setdefault("view1", out[0])
        seen.setdefault("view2", out[1])
        seen.setdefault("sizes", sizes)
        return out

    monkeypatch.setattr(learner.augment, "views", record_views)
    pretrain(spec, tmp_path / "run", show_progress=False)
    assert seen["sizes"] is not None  # training cropped from whole images
    assert shown.view1.equal(seen["view1"][:4]) and shown.view2.equal(seen["view2"][:4])
    h, w = seen["sizes"][0].tolist()
    assert shown.stored.shape == (4, 3, 16, 16)  # each whole image fitted into its panel, aspect kept
    if h != w:  # the short side leaves black bands: the image was not cropped to a square
        rows, cols = (shown.stored[0].sum(0) > 0).any(1).sum().item(), (shown.stored[0].sum(0) > 0).any(0).sum().item()
        assert (rows, cols) == ((16, round(w * 16 / h)) if h > w else (round(h * 16 / w), 16))
    png = tmp_path / "views.png"
    result = CliRunner().invoke(app, ["pretrain", "--no-progress", "--preview", str(png),
                                      *[a for item in TINY for a in ("--set", item)], "--dataset", str(folder),
                                      "--set", f"data.root={tmp_path / 'cache'}", "--set", "data.storage=chunks",
                                      "--set", "data.workers=0", "--set", "train.batch_size=8", "--set",
                                      "data.limit=16"])  # fmt: skip
    assert result.exit_code == 0 and png.is_file(), result.output


def test_the_other_objectives_views_are_the_learners_from_their_own_streams(tmp_path):
    from affssl.objectives.care import shared_views
    from affssl.objectives.rotation import small_views
    from affssl.streams import generator

    spec = load_spec("default", [*TINY, "rotation.enabled=true", "care.enabled=true", "care.chunks=4"])
    data = load_dataset(spec.data, seed=spec.train.seed)
    shown = preview.first_batch(spec, data, n=2)
    names = [c for c, _ in preview.columns(shown)]
    assert names[-3:] == ["rotation: small view", "CARE view 1", "CARE view 2"]
    cpu, seed, size_px = torch.device("cpu"), spec.train.seed, spec.data.image_size_px
    index = next(batches(data.train.images.shape[0], spec.train.batch_size, generator(seed, "order", 0, cpu)))
    batch = data.train.images[index]  # (B, C, S, S) the engine's first batch
    small = small_views(batch, spec.rotation, spec.augment, generator(seed, "rotation", 0, cpu), size_px)
    c1, c2 = shared_views(batch, spec.augment, 4, generator(seed, "care", 0, cpu), size_px)
    assert shown.objectives[0][1].equal(small[:2]) and small.shape[-1] == size_px // 2
    assert shown.objectives[1][1].equal(c1[:2]) and shown.objectives[2][1].equal(c2[:2])
    path = preview.draw(shown, tmp_path / "p.png", "title")
    assert Image.open(path).size == preview.figure_size_px(shown)
