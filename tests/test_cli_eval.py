"""`affssl eval linear|knn|affine` and `affssl export` through the CLI: tables, JSON, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from affssl.cli import app

runner = CliRunner()


@pytest.fixture()
def run_ckpt(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the tiny checkpoint (its eval/ folder is the test's own); data cache in tmp."""
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "run" / "last.safetensors"
    ckpt.parent.mkdir()
    shutil.copy(tiny_checkpoint, ckpt)
    return ckpt


@pytest.mark.parametrize(
    ("argv", "title", "key"),
    [
        (["linear", "--trials", "2"], "linear probe", "top1_pct"),
        (["knn"], "weighted kNN", "top1_pct"),
        (["affine"], "equivariance probe", "r2"),
    ],
)
def test_eval_prints_a_table_and_json(run_ckpt, argv, title, key):
    common = [str(run_ckpt), "--limit", "200", "--device", "cpu"]
    table = runner.invoke(app, ["eval", *argv, *common])
    assert table.exit_code == 0, table.output
    assert title in table.output and "digits" in table.output
    as_json = runner.invoke(app, ["eval", *argv, *common, "--json"])
    assert as_json.exit_code == 0, as_json.output
    record = json.loads(as_json.stdout)  # one JSON object, nothing else on stdout
    assert record["protocol"] == argv[0] and key in record["result"]
    assert set(record["cache"].values()) == {"hit"}  # the second run reads the features back
    saved = json.loads((run_ckpt.parent / "eval" / f"{argv[0]}-digits.json").read_text())
    assert saved["checkpoint"]["sha256"] == record["checkpoint"]["sha256"] and saved["spec"] == record["spec"]


def test_export_cli(run_ckpt, tmp_path):
    result = runner.invoke(app, ["export", str(run_ckpt), "--out", str(tmp_path / "bb.safetensors")])
    assert result.exit_code == 0, result.output
    assert "exported" in result.output and (tmp_path / "bb.safetensors").is_file()


def _truncated(tmp_path: Path, ckpt: Path) -> Path:
    data = ckpt.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(tmp_path: Path, ckpt: Path) -> Path:
    path = tmp_path / "notes.safetensors"
    path.write_text("these are notes, not tensors\n")
    return path


def _foreign(tmp_path: Path, ckpt: Path) -> Path:
    import torch

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    return path


def _unlabelled(tmp_path: Path, ckpt: Path) -> Path:
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return folder


def _export(tmp_path: Path, ckpt: Path) -> Path:
    out = tmp_path / "bb.safetensors"
    assert runner.invoke(app, ["export", str(ckpt), "--out", str(out)]).exit_code == 0
    return out


@pytest.mark.parametrize(
    ("make", "command", "needle"),
    [
        (lambda tmp, ckpt: tmp / "missing.safetensors", ["eval", "linear"], "does not exist"),
        (_text, ["eval", "knn"], "not a readable safetensors"),
        (_truncated, ["eval", "linear"], "truncated"),
        (_foreign, ["eval", "affine"], "has format 'pt'"),
        (_truncated, ["export"], "truncated"),
        (_export, ["export"], "already a backbone export"),
        (_unlabelled, ["eval", "linear"], "unlabelled"),
    ],
    ids=["missing", "text", "truncated", "other-format", "export-truncated", "export-of-export", "unlabelled"],
)
def test_errors_are_one_line_exit_2(run_ckpt, tmp_path, make, command, needle):
    target = make(tmp_path, run_ckpt)
    if command == ["export"]:
        argv = [*command, str(target), "--out", str(tmp_path / "out.safetensors")]
    elif target.is_dir():  # a data set, not a checkpoint
        argv = [*command, str(run_ckpt), "--dataset", str(target), "--device", "cpu"]
    else:
        argv = [*command, str(target), "--device", "cpu"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit | None)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output


def test_eval_init_random_scores_the_untrained_encoder_of_a_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    tiny = ["--set", "backbone.width=4", "--set", "data.image_size_px=8", "--limit", "100", "--device", "cpu"]
    result = runner.invoke(app, ["eval", "knn", "--init", "random", "default", *tiny, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["checkpoint"]["epoch"] == "0" and record["spec"]["backbone"]["width"] == 4
    (folder,) = (tmp_path / "floors").iterdir()
    assert Path(record["path"]).resolve().parent == folder.resolve() / "eval"
    (tmp_path / "run").mkdir()  # RUN/spec.json: the floor lands in RUN/floor
    (tmp_path / "run" / "spec.json").write_text((folder / "spec.json").read_text())
    result = runner.invoke(app, ["eval", "knn", "--init", "random", "run/spec.json", "--limit", "100", "--json"])
    assert result.exit_code == 0 and (tmp_path / "run/floor/last.safetensors").is_file()
    refused = runner.invoke(app, ["eval", "knn", "run/floor/last.safetensors", "--set", "train.seed=1"])
    assert refused.exit_code == 2 and "--init random" in refused.output
