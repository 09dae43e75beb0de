"""The equivariance profile (affssl.eval.profile, `eval equivariance`): oracles on synthetic features, the views and
rotations against their definitions, and the profile of a tiny checkpoint trained with AugSelf and rotation."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affssl import affine, augment, precision
from affssl.cli import app
from affssl.eval import equivariance, evaluate_affine, evaluate_equivariance, profile
from affssl.eval.features import open_source
from affssl.eval.session import Session, load_learner
from affssl.objectives import rotation
from affssl.objectives.augself import augself_targets
from affssl.spec import AugmentSpec

runner = CliRunner()


def _targets(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"crop": torch.rand(n, 4, generator=gen) - 0.5, "colour": torch.rand(n, 4, generator=gen) - 0.5}


def test_features_that_are_the_deltas_give_r2_one_and_random_features_zero():
    y_train, y_test = _targets(600, 0), _targets(200, 1)
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(8, 16, generator=gen)

    def encode(y: dict[str, torch.Tensor]) -> torch.Tensor:  # (n, 16): view 1 carries Δ, view 2 is noise
        return torch.cat([y["crop"], y["colour"]], 1) @ w

    noise = lambda n: torch.randn(n, 16, generator=gen)  # noqa: E731
    r2, cols = profile.augself_r2(encode(y_train), noise(600), y_train, encode(y_test), noise(200), y_test)
    assert set(r2) == {"crop", "colour"} and min(r2.values()) > 0.99
    assert len(cols) == 8 and "crop.centre_x" in cols and "colour.hue" in cols and min(cols.values()) > 0.99
    r2, cols = profile.augself_r2(noise(600), noise(600), y_train, noise(200), noise(200), y_test)
    assert max(abs(v) for v in cols.values()) < 0.1


def test_pair_views_are_the_pipelines_views_and_the_objectives_own_targets(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (12, 3, 16, 16), generator=gen, dtype=torch.uint8)
    spec = AugmentSpec()
    pairs = profile.pair_views(images, spec, seed=7)
    v1, v2, p1, p2 = augment.views_with_params(images, spec, torch.Generator().manual_seed(7))  # the same draws
    assert torch.equal(pairs.v1, v1) and torch.equal(pairs.v2, v2)
    expected = augself_targets(p1, p2, spec)
    assert pairs.targets.keys() == expected.keys()
    assert all(torch.equal(pairs.targets[k], expected[k]) for k in expected)
    again = profile.pair_views(images, spec, seed=7)  # deterministic for a seed
    assert torch.equal(again.v1, pairs.v1) and torch.equal(again.targets["colour"], pairs.targets["colour"])
    monkeypatch.setattr(profile, "VIEW_CHUNK", 5)  # chunks: one generator runs through them, same shapes out
    chunked = profile.pair_views(images, spec, seed=7)
    assert chunked.v1.shape == pairs.v1.shape and chunked.targets["crop"].shape == (12, 4)


def test_rotated_images_are_torch_rot90_of_each_image():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    turned, labels = profile.rotated(images)
    assert turned.shape == (8, 3, 4, 4) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for row in range(8):
        k, i = divmod(row, 2)
        assert torch.equal(turned[row], torch.rot90(images[i], k, dims=(1, 2)))


def test_rotation_one_hot_features_give_100_percent_and_random_features_chance():
    labels = torch.arange(4).repeat_interleave(50)  # (200,)
    gen = torch.Generator().manual_seed(0)
    one_hot = torch.nn.functional.one_hot(labels, 4).double() + 0.01 * torch.randn(200, 4, generator=gen)
    acc, c = profile.rotation_probe(one_hot, labels, one_hot.flip(0), labels.flip(0), seed=0, max_iter=200)
    assert acc == 100.0 and c > 0
    noise = lambda: torch.randn(200, 8, generator=gen)  # noqa: E731
    acc, _ = profile.rotation_probe(noise(), labels, noise(), labels, seed=0, max_iter=200)
    assert 10.0 < acc < 40.0  # chance: 25 %
    block = type("Block", (), {"predict": staticmethod(lambda h: h)})()  # a head that reads the one-hot code
    assert profile.rotation_head_acc(block, one_hot, labels) == 100.0


@pytest.fixture()
def aux_run(make_checkpoint, tmp_path, monkeypatch):
    """A private copy of an (untrained, complete) checkpoint with affine, AugSelf and rotation heads."""
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    source = make_checkpoint(("backbone.width=4", "data.image_size_px=16", "data.dataset=digits",
                              "augself.enabled=true", "rotation.enabled=true"), "aux")  # fmt: skip
    ckpt = tmp_path / "run" / "last.safetensors"
    ckpt.parent.mkdir()
    shutil.copy(source, ckpt)
    return ckpt


def test_profile_holds_the_affine_probes_numbers_and_every_head_and_is_deterministic(aux_run):
    options = {"limit": 60, "device": "cpu", "max_iter": 50}
    record = evaluate_equivariance(aux_run, **options)
    result = record["result"]
    affine = evaluate_affine(aux_run, limit=60, device="cpu")["result"]
    assert result["affine"] == affine  # today's probe, unchanged numbers
    assert result["heads"] == ["affine", "augself", "rotation"]
    assert set(result["augself"]["r2"]) == set(result["augself"]["r2_head"]) == {"crop", "colour"}
    assert 0.0 <= result["rotation"]["acc_pct"] <= 100.0 and result["rotation"]["head_acc_pct"] is not None
    assert result["rotation"]["chance_pct"] == 25.0
    saved = json.loads((aux_run.parent / "eval" / "equivariance-digits.json").read_text())
    assert saved["checkpoint"]["sha256"] == record["checkpoint"]["sha256"] and saved["spec"] == record["spec"]
    again = evaluate_equivariance(aux_run, cache=False, **options)["result"]  # recomputed: the same numbers
    assert np.isclose(again["augself"]["r2"]["crop"], result["augself"]["r2"]["crop"], atol=1e-6)
    assert again["rotation"] == result["rotation"]


def test_eval_equivariance_cli_on_a_run_trained_with_augself_and_rotation(tmp_path, monkeypatch, keep_threads):
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    trained = runner.invoke(app, ["pretrain", "--aux", "augself,rotation", "--epochs", "1", "--set",
                                  "backbone.width=4", "--set", "data.image_size_px=16", "--batch-size", "32",
                                  "--limit", "64", "--device", "cpu", "--out", str(run)])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    argv = ["eval", "equivariance", str(run), "--limit", "60", "--device", "cpu", "--max-iter", "50"]
    table = runner.invoke(app, argv)
    assert table.exit_code == 0, table.output
    assert "equivariance profile" in table.output and "crop Δ R²" in table.output and "4-way accuracy" in table.output
    record = json.loads(runner.invoke(app, [*argv, "--json"]).stdout)
    assert record["protocol"] == "equivariance" and set(record["cache"].values()) == {"hit"}
    assert record["result"]["heads"] == ["augself", "rotation"]
    assert record["result"]["affine"]["r2_head"] is None
    floor = runner.invoke(app, ["eval", "equivariance", str(run), "--init", "random", "--limit", "60", "--device",
                                "cpu", "--max-iter", "50", "--json"])  # fmt: skip
    assert floor.exit_code == 0, floor.output
    assert json.loads(floor.stdout)["result"]["heads"] == []  # the floor: an untrained encoder, no head


def test_an_exported_backbone_gets_the_same_profile_without_heads(aux_run, tmp_path):
    export = tmp_path / "bb.safetensors"
    assert runner.invoke(app, ["export", str(aux_run), "--out", str(export)]).exit_code == 0
    options = {"limit": 60, "device": "cpu", "max_iter": 50}
    exported = evaluate_equivariance(export, **options)
    trained = evaluate_equivariance(aux_run, **options)["result"]
    assert exported["path"].startswith(str(tmp_path / "bb.eval"))
    result = exported["result"]
    assert result["heads"] == [] and result["augself"]["r2_head"] is None and result["rotation"]["head_acc_pct"] is None
    assert result["affine"]["head_note"] == "no head: a backbone export"
    assert result["affine"]["r2"] == trained["affine"]["r2"]  # the same encoder: the same probe numbers
    assert result["rotation"]["acc_pct"] == trained["rotation"]["acc_pct"]


@pytest.mark.parametrize("location", ["encoder", "projector"])
def test_every_head_is_also_scored_as_trained_on_batch_statistics_of_its_own_passes(
    make_checkpoint, tmp_path, monkeypatch, location
):
    """r2_head_batch / head_acc_pct_batch against a naive reference: a copy of the model in train mode, each set
    of test images (clean, warped, each view, E-SSL's small views with their four turns) encoded batch by batch."""
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    overrides = ("backbone.width=4", "data.image_size_px=16", "data.dataset=digits", "train.batch_size=16",
                 "train.precision=fp32", "augself.enabled=true", "rotation.enabled=true",
                 f"affine.location={location}")  # fmt: skip
    ckpt = make_checkpoint(overrides, f"batch-{location}")
    result = evaluate_equivariance(ckpt, limit=60, device="cpu", max_iter=50)["result"]

    source = open_source(ckpt)
    spec, learner = source.spec, load_learner(source)
    session = Session(ckpt, None, 0, 60, "cpu", 256, False, False, None, need_labels=False)
    x = session.split("test").images  # (N, 3, 16, 16) uint8
    trained = copy.deepcopy(learner).train()  # running statistics may move: it is a copy
    policy = precision.resolve(spec.train.precision, "channels_last", torch.device("cpu"))
    b = spec.train.batch_size
    assert len(x) > 2 * b  # several batches: the batching is part of what is checked

    def encode(images: torch.Tensor, batch: int = b, encoder=trained.backbone) -> torch.Tensor:
        with torch.no_grad(), policy.autocast():
            return torch.cat([encoder(images[i : i + batch]).float() for i in range(0, len(images), batch)])

    probe = equivariance.probe_spec(spec.affine)
    phi = equivariance.sample_phi(len(x), probe, 16, equivariance.PROBE_SEED_OFFSET["test"])  # seed 0 + offset
    clean = x.float() / 255
    head_input = trained.embedded if location == "projector" else trained.backbone  # batch by batch, as trained
    h, hw = encode(clean, encoder=head_input), encode(affine.warp(clean, phi, probe), encoder=head_input)
    expected = equivariance.head_r2(learner.head.mlp, None, h, hw, phi, spec.affine, 16)
    assert result["affine"]["r2_head_batch"] == pytest.approx(expected, abs=1e-4)
    assert result["affine"]["r2_head_batch"] != pytest.approx(result["affine"]["r2_head"], abs=1e-3)

    pairs = profile.pair_views(x, spec.augment, profile.VIEW_SEED_OFFSET["test"])
    expected = profile.augself_head_r2(learner.objectives["augself"], encode(pairs.v1), encode(pairs.v2),
                                       pairs.targets)["r2"]  # fmt: skip
    assert result["augself"]["r2_head_batch"] == pytest.approx(expected, abs=1e-4)

    gen = torch.Generator().manual_seed(profile.SMALL_VIEW_SEED_OFFSET)
    small = rotation.small_views(x, spec.rotation, spec.augment, gen, 16)  # (N, 3, 8, 8)
    hits = 0
    for i in range(0, len(small), b):  # one training step's pass: all four turns of b views together
        turned = torch.cat([torch.rot90(small[i : i + b], k, dims=(2, 3)) for k in range(4)])  # (4b, 3, 8, 8)
        labels = torch.arange(4).repeat_interleave(len(turned) // 4)
        with torch.no_grad():
            hits += int((learner.objectives["rotation"].predict(encode(turned, 4 * b)).argmax(1) == labels).sum())
    assert result["rotation"]["head_acc_pct_batch"] == pytest.approx(100.0 * hits / (4 * len(small)), abs=1e-9)
