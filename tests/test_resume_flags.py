"""`pretrain --resume`: every shortcut flag and a few --set fields, refused when they contradict the run."""

import json
import tomllib

import pytest
import torch
from typer.testing import CliRunner

from affssl import runs
from affssl.cli import app
from affssl.cli.pretrain import RESUMABLE
from affssl.engine import save_checkpoint
from affssl.learner import Learner
from affssl.spec import load_spec

runner = CliRunner()
STORED = ["backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "data.limit=64", "train.epochs=1"]


@pytest.fixture
def run_dir(tmp_path):
    """A finished 1-epoch SimCLR + affine run (digits, 16 px, width 4, batch 32, limit 64)."""
    spec = load_spec("default", STORED)
    run = tmp_path / "run"
    run.mkdir()
    runs.write_spec(run, spec)
    torch.manual_seed(0)
    learner = Learner(spec)
    save_checkpoint(run / runs.LAST, learner, torch.optim.Adam(learner.parameters()), spec, {"epoch": 1, "step": 2})
    return run


def invoke(*args):
    return runner.invoke(app, ["pretrain", *map(str, args)])


def files(run):
    return {p.name: p.read_bytes() for p in run.iterdir()}


@pytest.mark.parametrize(
    ("args", "field", "stored", "requested"),
    [
        (["--base", "byol"], "method.name", "simclr", "byol"),
        (["--no-affine"], "affine.enabled", True, False),
        (
            ["--components", "scale,shear"],
            "affine.components",
            ["rotation", "translation", "scale", "shear"],
            ["scale", "shear"],
        ),
        (["--dataset", "cifar10"], "data.dataset", "digits", "cifar10"),
        (["--backbone", "resnet50"], "backbone.name", "resnet18", "resnet50"),
        (["--batch-size", "64"], "train.batch_size", 32, 64),
        (["--limit", "65"], "data.limit", 64, 65),
        (["--seed", "3"], "train.seed", 0, 3),
        (["--set", "optim.lr=0.1"], "optim.lr", 0.001, 0.1),
        (["--set", "method.temperature=0.2"], "method.temperature", 0.5, 0.2),
        (["--set", "method.name=barlow"], "method.name", "simclr", "barlow"),
        (["--set", "augment.crop_scale=[0.5, 1.0]"], "augment.crop_scale", [0.3, 1.0], [0.5, 1.0]),
        (["--set", "train.compile=true"], "train.compile", False, True),
        (["--epochs", "3", "--set", "backbone.width=8"], "backbone.width", 4, 8),  # one allowed, one not
    ],
)
def test_contradicting_flag_is_refused_naming_both_values(run_dir, args, field, stored, requested):
    before = files(run_dir)
    result = invoke("--resume", "--out", run_dir, "--no-progress", *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"cannot change {field}: the run in {run_dir} has {json.dumps(stored)}, this command asks for " \
           f"{json.dumps(requested)}" in " ".join(result.output.split()), result.output  # fmt: skip
    assert files(run_dir) == before  # nothing touched


@pytest.mark.parametrize(
    ("args", "field", "value"),
    [
        (["--epochs", "3"], "train.epochs", 3),
        (["--device", "cpu"], "train.device", "cpu"),
        (["--set", "train.log_every=1"], "train.log_every", 1),
        (["--set", "train.checkpoint_every=2"], "train.checkpoint_every", 2),
        (["--set", "data.root='/tmp/elsewhere'"], "data.root", "/tmp/elsewhere"),
        (["--set", "data.cache=false"], "data.cache", False),
        (["--no-progress"], "train.epochs", 1),
        # repeating the stored value is fine, for every shortcut flag
        (["--base", "simclr"], "method.name", "simclr"),
        (["--affine"], "affine.enabled", True),
        (
            ["--components", "shear,scale,translation,rotation"],
            "affine.components",
            ["rotation", "translation", "scale", "shear"],
        ),
        (["--dataset", "digits"], "data.dataset", "digits"),
        (["--backbone", "resnet18"], "backbone.name", "resnet18"),
        (["--batch-size", "32"], "train.batch_size", 32),
        (["--limit", "64"], "data.limit", 64),
        (["--seed", "0"], "train.seed", 0),
        (["--set", "optim.lr=1e-3"], "optim.lr", 0.001),
        (
            [
                "default",
                "--set",
                "backbone.width=4",
                "--set",
                "data.image_size_px=16",
                "--batch-size",
                "32",
                "--limit",
                "64",
                "--epochs",
                "2",
            ],
            "train.epochs",
            2,
        ),  # a spec file equal to the run
    ],
)
def test_allowed_or_repeated_flag_takes_effect(run_dir, args, field, value):
    result = invoke("--resume", "--out", run_dir, "--print-spec", *args)
    assert result.exit_code == 0, result.output
    spec = tomllib.loads(result.output)
    section, name = field.split(".")
    assert spec[section][name] == value


def test_a_spec_file_is_compared_whole(run_dir):
    result = invoke("paper", "--resume", "--out", run_dir)
    assert result.exit_code == 2 and "cannot change" in result.output, result.output


def test_resumable_fields_are_the_documented_ones():
    assert set(RESUMABLE) >= {"train.epochs", "train.device", "train.log_every", "train.checkpoint_every"}
    assert not {"train.batch_size", "train.seed", "method.name", "optim.lr", "data.dataset"} & set(RESUMABLE)


def test_resume_extends_epochs_and_records_the_new_spec(run_dir):
    result = invoke("--resume", "--out", run_dir, "--epochs", "2", "--set", "train.log_every=1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / runs.SPEC).read_text())["train"]["epochs"] == 2
    records = runs.read_metrics(run_dir)
    assert [r["step"] for r in records if r["kind"] == "step"] == [3, 4]  # log_every=1 over epoch 2's two steps
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [2]
    assert not (run_dir / runs.LOCK).exists()  # released
