"""`affssl eval linear|knn|affine` and `affssl export` through the CLI: tables, JSON, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from affssl import cpus, runenv
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
    record = json.loads(result.stdout)  # stderr holds the threads line
    assert record["checkpoint"]["epoch"] == "0" and record["spec"]["backbone"]["width"] == 4
    (folder,) = (tmp_path / "floors").iterdir()
    assert Path(record["path"]).resolve().parent == folder.resolve() / "eval"
    (tmp_path / "run").mkdir()  # RUN/spec.json: the floor lands in RUN/floor
    (tmp_path / "run" / "spec.json").write_text((folder / "spec.json").read_text())
    result = runner.invoke(app, ["eval", "knn", "--init", "random", "run/spec.json", "--limit", "100", "--json"])
    assert result.exit_code == 0 and (tmp_path / "run/floor/last.safetensors").is_file()
    refused = runner.invoke(app, ["eval", "knn", "run/floor/last.safetensors", "--set", "train.seed=1"])
    assert refused.exit_code == 2 and "--init random" in refused.output


# ---------------------------------------------------------------------------------------------
# --threads: resolved on the machine that evaluates, printed once, kept in the record


def test_eval_threads_auto_is_this_machines_not_the_checkpoints(make_checkpoint, tmp_path, monkeypatch, keep_threads):
    import torch

    tiny = ("backbone.width=8", "data.image_size_px=16", "data.dataset=digits")  # conftest's tiny checkpoint
    ckpt = make_checkpoint((*tiny, "train.threads=3"), "trained-on-3")  # its spec resolved on a 3-CPU machine
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpus, "available", lambda *a, **k: 1)  # this machine: 1 CPU
    torch.set_num_threads(2)
    result = runner.invoke(app, ["eval", "knn", str(ckpt), "--limit", "100", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["spec"]["train"]["threads"] == 3 and record["options"]["threads"] == 1
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["cpu_isa"] == runenv.cpu_isa()  # the bits' key beside options.threads and torch_version
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: threads:")]
    assert len(notes) == 1 and notes[0].startswith("note: threads: 1 ("), result.stderr  # printed once
    given = runner.invoke(app, ["eval", "embed", str(ckpt), "--points", "20", "--method", "tsne", "--device", "cpu",
                                "--threads", "2", "--json"])  # fmt: skip
    assert given.exit_code == 0, given.output
    assert json.loads(given.stdout)["options"]["threads"] == 2 and torch.get_num_threads() == 2
    assert "note: threads: 2 (--threads)" in given.stderr


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_eval_threads_other_than_auto_or_a_count_is_one_line(run_ckpt, value):
    result = runner.invoke(app, ["eval", "knn", str(run_ckpt), "--threads", value])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --threads") and "auto" in lines[0], result.output


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")
def test_eval_under_taskset_to_one_cpu_probes_on_one_thread(run_ckpt):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "affssl", "eval", "knn", str(run_ckpt), "--limit", "100", "--device", "cpu", "--json"]
    done = subprocess.run(["taskset", "-c", "0", *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["options"]["threads"] == 1
    assert "note: threads: 1 (1 CPUs in the affinity mask" in done.stderr
