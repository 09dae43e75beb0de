"""`pretrain --preview`: the first batch's images, views and warps, exactly as training computes them, drawn."""

from __future__ import annotations

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
