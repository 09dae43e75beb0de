"""The objectives from the command line and in runs: --aux, checkpoints, export, and exact resume."""

from __future__ import annotations

import signal
import tomllib

import pytest
from conftest import assert_same_tensors, signal_at
from safetensors.torch import load_file
from typer.testing import CliRunner

from affssl import checkpoint, faults, runs
from affssl.cli import app
from affssl.engine import pretrain
from affssl.eval.features import open_source
from affssl.eval.session import load_learner
from affssl.spec import AUX, load_spec

runner = CliRunner()
TINY = ["backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "method.proj_hidden=32",
        "method.proj_out=16", "affine.head_hidden=32", "augself.head_hidden=16", "rotation.head_hidden=32",
        "train.monitor_every=0"]  # fmt: skip
SETS = [a for o in TINY for a in ("--set", o)]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_rotation_small_views_must_tile_a_vits_patches():
    result = run("pretrain", "--backbone", "vit_tiny", "--set", "data.image_size_px=20", "--aux", "rotation",
                 "--print-spec")  # fmt: skip
    assert result.exit_code == 2 and "rotation's small views are 10 px" in result.output, result.output
    assert "set rotation.size_frac" in result.output
    ok = run("pretrain", "--backbone", "vit_tiny", "--set", "data.image_size_px=20", "--aux", "rotation", "--set",
             "rotation.size_frac=0.4", "--print-spec")  # fmt: skip
    assert ok.exit_code == 0, ok.output


def test_a_bad_aux_name_is_one_line_naming_the_valid_ones():
    result = run("pretrain", "--aux", "affine,augsef", "--print-spec")
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'augsef' is not an objective" in lines[0], result.output
    assert "affine, augself, rotation, care" in lines[0]


@pytest.mark.parametrize(
    ("flags", "on"),
    [
        (["--aux", "augself,care"], {"augself", "care"}),
        (["--aux", "none"], set()),
        (["--aux", "rotation", "--affine"], {"affine", "rotation"}),
        (["--aux", "affine,augself,rotation,care", "--no-affine"], {"augself", "rotation", "care"}),
        (["--no-affine"], set()),
        ([], {"affine"}),
    ],
)
def test_aux_turns_on_exactly_the_listed_objectives_and_the_spec_round_trips(flags, on, tmp_path):
    result = run("pretrain", "--base", "byol", *flags, "--print-spec")
    assert result.exit_code == 0, result.output
    spec = tomllib.loads(result.output)
    assert {name for name in AUX if spec[name]["enabled"]} == on
    assert spec["rotation"]["weight"] == 0.4 and spec["care"]["weight"] == 0.03
    (tmp_path / "s.toml").write_text(result.output)
    again = run("pretrain", tmp_path / "s.toml", "--print-spec")
    assert again.exit_code == 0 and again.output == result.output


def test_pretrain_with_every_objective_checkpoints_each_and_exports_the_same_backbone(tmp_path):
    all_on, base = tmp_path / "all", tmp_path / "base"
    for out, aux in ((all_on, "affine,augself,rotation,care"), (base, "none")):
        result = run("pretrain", "--aux", aux, "--epochs", "1", "--limit", "64", "--no-progress", "--out", out, *SETS)
        assert result.exit_code == 0, result.output
        assert ("simclr + affine + augself + rotation + care," in result.output) == (out == all_on)
    tensors = load_file(all_on / runs.LAST)
    prefixes = {".".join(k.split(".")[:3]) for k in tensors if k.startswith("model.")}
    assert {"model.objectives.augself", "model.objectives.rotation"} <= prefixes
    assert any(k.startswith("model.head.") for k in tensors)
    epoch = [r for r in runs.read_metrics(all_on) if r.get("kind") == "epoch"][-1]
    assert all(f"loss_{name}" in epoch for name in AUX)
    learner = load_learner(open_source(all_on / runs.LAST))  # eval rebuilds the whole model from the header
    assert set(learner.objectives) == {"augself", "rotation", "care"} and learner.head is not None
    exported = {}
    for run_dir in (all_on, base):
        result = run("export", run_dir / runs.LAST, "--out", run_dir / "bb.safetensors")
        assert result.exit_code == 0, result.output
        exported[run_dir] = load_file(run_dir / "bb.safetensors")
    assert exported[all_on].keys() == exported[base].keys()
    backbone = {k.removeprefix("model.backbone."): v for k, v in tensors.items() if k.startswith("model.backbone.")}
    assert exported[all_on].keys() == backbone.keys()


def test_a_run_with_the_new_objectives_stopped_inside_an_epoch_resumes_bit_identical(tmp_path, monkeypatch):
    spec = load_spec("default", [*TINY, "data.limit=128", "train.epochs=2", "train.log_every=1",
                                 "augself.enabled=true", "rotation.enabled=true", "care.enabled=true",
                                 "care.chunks=3"])  # fmt: skip
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    pretrain(spec, reference, show_progress=False)
    signal_at(monkeypatch, signal.SIGTERM, 3)  # SIGTERM right after step 3's line: inside epoch 1 (4 steps)
    with pytest.raises(faults.Preempted):
        pretrain(spec, stopped, show_progress=False)
    monkeypatch.undo()
    held = load_file(stopped / runs.LAST)
    assert {"position.views", "position.affine", "position.rotation", "position.care"} <= held.keys()
    pretrain(spec, stopped, resume=True, show_progress=False)
    assert_same_tensors(reference / runs.LAST, stopped / runs.LAST)


def test_a_checkpoint_from_before_the_objectives_loads_as_it_did(make_checkpoint, tmp_path):
    """A header spec with no augself/rotation/care sections (written before them): the same model, keys head.*."""
    import json

    from safetensors.torch import save_file

    path = make_checkpoint(("backbone.width=4", "data.image_size_px=16"), name="before")
    tensors, header = load_file(path), checkpoint.read_header(path)
    spec = json.loads(header["spec"])
    for name in ("augself", "rotation", "care"):
        del spec[name]
    old = tmp_path / "old.safetensors"
    save_file(tensors, old, metadata={**header, "spec": json.dumps(spec)})
    learner = load_learner(open_source(old))
    assert not learner.objectives and learner.head is not None
    assert {k.split(".")[0] for k in learner.state_dict()} == {"backbone", "method", "head"}
    assert all(learner.state_dict()[k.removeprefix("model.")].equal(v) for k, v in tensors.items()
               if k.startswith("model."))  # fmt: skip
