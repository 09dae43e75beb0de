"""A resume on data that changed since the checkpoint: refused in one line, or continued knowingly.

A generated image folder (48 JPEGs, 3 steps an epoch), one epoch trained, then 60 % of the images
deleted (or one file touched) before `--resume`, on both storages.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import header, signal_at
from test_chunks import TINY, make_folder, spec_for
from typer.testing import CliRunner

from affssl import faults, runs
from affssl.cli import app
from affssl.data import fingerprint

STORAGES = ["tensor", pytest.param("chunks", marks=pytest.mark.skipif(not __import__("importlib").util.find_spec(
    "litdata"), reason="needs litdata"))]  # fmt: skip


def pretrain(folder: Path, run: Path, storage: str, *args: str):
    sets = [*TINY, f"data.dataset={folder}", f"data.root={run.parent / 'cache'}", f"data.storage={storage}",
            "data.workers=0"]  # fmt: skip
    return CliRunner().invoke(app, ["pretrain", "--no-progress", "--out", str(run),
                                    *[a for o in sets for a in ("--set", o)], *args])  # fmt: skip


def lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


@pytest.mark.parametrize("storage", STORAGES)
def test_a_resume_on_changed_data_is_refused_then_allowed_with_monotonic_steps(tmp_path, storage):
    folder, run = make_folder(tmp_path / "imgs"), tmp_path / "run"
    first = pretrain(folder, run, storage, "--set", "train.epochs=1")
    assert first.exit_code == 0, first.output
    assert fingerprint.stored(header(run / runs.LAST)[fingerprint.HEADER]).count == 48
    files = sorted(folder.rglob("*.jpg"))
    for path in files[: int(0.6 * len(files))]:  # 60 % gone: 20 images left, 1 step an epoch
        path.unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    refused = pretrain(folder, run, storage, "--resume", "--set", "train.epochs=2")
    assert refused.exit_code == 2 and len(lines(refused)) == 1, refused.output
    assert "48 → 20 training images" in refused.output and "--allow-data-change" in refused.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing touched

    allowed = pretrain(folder, run, storage, "--resume", "--set", "train.epochs=3", "--allow-data-change")
    assert allowed.exit_code == 0, allowed.output
    records = runs.read_metrics(run)
    steps = [r["step"] for r in records if r["kind"] == "step"]
    epochs = [(r["epoch"], r["step"]) for r in records if r["kind"] == "epoch"]
    assert steps == [1, 2, 3, 4, 5] and epochs == [(1, 3), (2, 4), (3, 5)], records
    assert fingerprint.stored(header(run / runs.LAST)[fingerprint.HEADER]).count == 20


def test_allow_data_change_without_resume_is_one_line(tmp_path):
    result = pretrain(make_folder(tmp_path / "imgs", per_class=2), tmp_path / "run", "tensor", "--allow-data-change")
    assert result.exit_code == 2 and len(lines(result)) == 1 and "only applies to --resume" in result.output
    assert not (tmp_path / "run").exists()


def test_a_touched_file_is_a_change_too(tmp_path):
    folder, run = make_folder(tmp_path / "imgs"), tmp_path / "run"
    assert pretrain(folder, run, "tensor", "--set", "train.epochs=1").exit_code == 0
    path = next(folder.rglob("*.jpg"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    refused = pretrain(folder, run, "tensor", "--resume", "--set", "train.epochs=2")
    assert refused.exit_code == 2 and len(lines(refused)) == 1, refused.output
    assert "the same 48 images, other files, sizes or mtimes" in refused.output
    unchanged = pretrain(folder, run, "tensor", "--resume", "--set", "train.epochs=2", "--set", "data.cache=false")
    assert unchanged.exit_code == 2  # the fingerprint does not depend on the decode cache


def test_a_run_stopped_inside_an_epoch_starts_that_epoch_over_on_the_changed_data(tmp_path, monkeypatch):
    from affssl.engine import pretrain as train

    folder, run = make_folder(tmp_path / "imgs"), tmp_path / "run"
    spec = spec_for(folder, tmp_path / "cache", "data.storage=tensor", "train.epochs=3")
    signal_at(monkeypatch, signal.SIGTERM, 5)  # inside epoch 2 (3 steps an epoch)
    with pytest.raises(faults.Preempted):
        train(spec, run, show_progress=False)
    monkeypatch.undo()
    assert int(header(run / runs.LAST)["epoch_step"]) == 2
    for path in sorted(folder.rglob("*.jpg"))[:16]:  # 32 images left: 2 steps an epoch
        path.unlink()
    with pytest.raises(fingerprint.DataChanged, match="48 → 32 training images"):
        train(spec, run, resume=True, show_progress=False)
    train(spec, run, resume=True, show_progress=False, allow_data_change=True)
    records = runs.read_metrics(run)
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [(r["epoch"], r["step"]) for r in records if r["kind"] == "epoch"] == [(1, 3), (2, 7), (3, 9)]
