"""examples/recipes/: solo-learn's CIFAR-10 ResNet-18 recipes as spec files.

Each recipe holds the settings of its source config (the table below, read off
vturrisi/solo-learn scripts/pretrain/cifar/*.yaml), names that config and its published accuracy
in its header, is shown by `affssl pretrain --print-spec`, and trains two steps when shrunk to
digits at 16 px.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from affssl import runs
from affssl.cli import app
from affssl.engine import pretrain
from affssl.spec import load_spec

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "recipes"
# base → (optimizer, lr, weight decay, projector hidden → out, published linear top-1 %)
SOLO_LEARN = {
    "simclr": ("lars", 0.4, 1e-4, (2048, 256), 90.74),
    "byol": ("lars", 1.0, 1e-5, (4096, 256), 92.58),
    "barlow": ("lars", 0.3, 1e-4, (2048, 2048), 92.10),
    "vicreg": ("lars", 0.3, 1e-4, (2048, 2048), 92.07),
    "dino": ("lars", 0.3, 1e-6, (2048, 256), 89.52),
    "mocov3": ("lars", 0.3, 1e-6, (4096, 256), 93.10),
    "simsiam": ("sgd", 0.5, 1e-5, (2048, 2048), 90.51),
}
ASYMMETRIC = ("byol", "barlow", "dino", "mocov3")  # solo-learn's asymmetric.yaml: the second view alone solarized
# Shrunk to run here: digits at 16 px, narrow encoder and heads, 2 steps of 16 images.
TINY = ["data.dataset=digits", "data.image_size_px=16", "data.limit=32", "train.batch_size=16", "train.epochs=1",
        "backbone.width=4", "method.proj_hidden=16", "method.proj_out=8", "train.precision=fp32",
        "train.log_every=1"]  # fmt: skip
PRED_HIDDEN = {"byol": 16, "mocov3": 16, "simsiam": 4}
SMALL_HEAD = {base: [f"method.pred_hidden={n}"] for base, n in PRED_HIDDEN.items()} | {"dino": ["method.prototypes=32"]}


def test_one_recipe_per_base():
    assert sorted(p.stem for p in RECIPES.glob("*.toml")) == sorted(SOLO_LEARN)


@pytest.mark.parametrize("base", list(SOLO_LEARN))
def test_recipe_holds_solo_learns_settings_and_names_its_source(base):
    path = RECIPES / f"{base}.toml"
    optimizer, lr, wd, (hidden, out), published = SOLO_LEARN[base]
    head = path.read_text()
    assert f"Source: vturrisi/solo-learn scripts/pretrain/cifar/{base}.yaml" in head
    assert re.search(rf"Published: {published:.2f} % linear top-1", head)
    spec = load_spec(path)
    assert spec.method.name == base and not spec.affine.enabled  # the base method; --affine adds the module
    assert (spec.optim.name, spec.optim.lr, spec.optim.weight_decay) == (optimizer, lr, wd)
    assert (spec.optim.schedule, spec.optim.warmup_epochs, spec.optim.momentum) == ("cosine", 10, 0.9)
    if optimizer == "lars":
        assert (spec.optim.eta, spec.optim.clip_lr, spec.optim.exclude_bias_norm) == (0.02, True, True)
    assert (spec.method.proj_hidden, spec.method.proj_out) == (hidden, out)
    assert (spec.train.batch_size, spec.train.epochs, spec.data.dataset, spec.data.image_size_px) == (
        256, 1000, "cifar10", 32)  # fmt: skip
    assert (spec.backbone.name, spec.backbone.width, spec.backbone.cifar_stem) == ("resnet18", 64, True)
    assert (spec.augment.solarize_p[0] != spec.augment.solarize_p[1]) == (base in ASYMMETRIC)
    if base == "dino":  # dino.yaml's head and teacher, and solo-learn's DINO defaults (its 2021 warm-up)
        m = spec.method
        assert (m.prototypes, m.momentum_base, m.student_temp, m.teacher_temp_start, m.teacher_temp) == (
            4096, 0.9995, 0.1, 0.04, 0.07)  # fmt: skip
        assert (m.teacher_temp_warmup_epochs, m.freeze_last_layer_epochs, m.head_bn) == (50, 1, False)
        assert spec.augment.local_crops == 0  # asymmetric.yaml: one crop of each pipeline


@pytest.mark.parametrize("base", list(SOLO_LEARN))
def test_recipe_trains_two_steps(base, tmp_path):
    spec = load_spec(RECIPES / f"{base}.toml", [*TINY, *SMALL_HEAD.get(base, [])])
    assert spec.optim == load_spec(RECIPES / f"{base}.toml").optim  # the recipe's optimizer, as published
    pretrain(spec, tmp_path / "run", show_progress=False)
    steps = [r for r in runs.read_metrics(tmp_path / "run") if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["loss"] == r["loss"] for r in steps)  # finite: NaN != NaN


def test_print_spec_shows_a_recipe():
    result = CliRunner().invoke(app, ["pretrain", str(RECIPES / "byol.toml"), "--print-spec"])
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output)  # --print-spec prints TOML that reads back
    assert shown["optim"]["name"] == "lars" and shown["method"]["tau_base"] == 0.99
    assert shown["augment"]["solarize_p"] == [0.0, 0.2]


def test_barlow_loss_scale_multiplies_the_loss():
    import torch

    from affssl.methods.barlow import BarlowTwins
    from affssl.spec import BarlowSpec

    h = torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(0))  # (views, B, F)
    losses = {}
    for scale in (1.0, 0.1):
        torch.manual_seed(0)
        method = BarlowTwins(BarlowSpec(proj_hidden=8, proj_out=4, loss_scale=scale), None, 6)
        losses[scale] = method(h[0], h[1], None, None).loss
    torch.testing.assert_close(losses[0.1], 0.1 * losses[1.0], rtol=1e-6, atol=0)
