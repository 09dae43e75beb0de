"""Full disk or unwritable folder: one line naming the path and the free space; nothing written is damaged."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch
from safetensors import SafetensorError
from typer.testing import CliRunner

from affssl import checkpoint, runs
from affssl.cli import app
from affssl.data import load_dataset, tensorfile
from affssl.errors import UserError
from affssl.spec import DataSpec, load_spec

runner = CliRunner()
TINY = ["--set", "backbone.width=4", "--set", "data.image_size_px=16", "--batch-size", "32", "--limit", "64",
        "--no-progress"]  # fmt: skip


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def half_then_enospc(tensors, path, metadata=None):
    with open(path, "wb") as f:
        f.write(b"\0" * 1000)  # a partial file, as a disk filling up mid-write leaves
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def no_temp_files(folder):
    return not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.mark.parametrize("writer", [enospc, half_then_enospc])
def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, writer):
    last = tmp_path / runs.LAST
    checkpoint.save(last, {"w": torch.arange(4.0)}, {"format": checkpoint.TRAIN_FORMAT, "epoch": "1"})
    before = last.read_bytes()
    monkeypatch.setattr(checkpoint, "save_file", writer)
    with pytest.raises(UserError) as caught:
        checkpoint.save(last, {"w": torch.zeros(4)}, {"format": checkpoint.TRAIN_FORMAT, "epoch": "2"})
    message = str(caught.value)
    assert "\n" not in message and f"could not write {last}" in message and "MiB free there" in message
    assert "No space left on device" in message
    assert last.read_bytes() == before and no_temp_files(tmp_path)
    tensors, header = checkpoint.load(last, expect=checkpoint.TRAIN_FORMAT)  # still loadable
    assert header["epoch"] == "1" and torch.equal(tensors["w"], torch.arange(4.0))


def test_failed_spec_write_keeps_the_previous_spec(tmp_path, monkeypatch):
    runs.write_spec(tmp_path, load_spec("default"))
    before = (tmp_path / runs.SPEC).read_bytes()
    monkeypatch.setattr(os, "replace", enospc)
    with pytest.raises(UserError, match=f"could not write {tmp_path / runs.SPEC} .*MiB free there"):
        runs.write_spec(tmp_path, load_spec("default", ["train.epochs=3"]))
    monkeypatch.undo()
    assert (tmp_path / runs.SPEC).read_bytes() == before and no_temp_files(tmp_path)


def test_failed_metrics_append_leaves_whole_lines(tmp_path, monkeypatch):
    runs.append_metrics(tmp_path, {"kind": "epoch", "epoch": 1})
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, data[: len(data) // 2])  # what write(2) does when the disk fills mid-line

    with monkeypatch.context() as m:
        m.setattr(os, "write", short_write)
        with pytest.raises(UserError, match=f"could not write {tmp_path / runs.METRICS}"):
            runs.append_metrics(tmp_path, {"kind": "epoch", "epoch": 2, "note": "x" * 100})
    assert runs.read_metrics(tmp_path) == [{"kind": "epoch", "epoch": 1}]


def test_metrics_rewrite_on_resume_is_atomic(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        runs.append_metrics(tmp_path, {"kind": "log", "step": step})
    before = (tmp_path / runs.METRICS).read_bytes()
    with monkeypatch.context() as m:
        m.setattr(os, "replace", enospc)  # the temp file is written, the swap fails: the old file stays
        with pytest.raises(UserError) as caught:
            runs.rewrite_metrics(tmp_path, [{"kind": "log", "step": 1}])
    message = str(caught.value)
    assert "\n" not in message and f"could not write {tmp_path / runs.METRICS}" in message
    assert "MiB free there" in message and "No space left on device" in message
    assert (tmp_path / runs.METRICS).read_bytes() == before and no_temp_files(tmp_path)
    runs.rewrite_metrics(tmp_path, [{"kind": "log", "step": 1}, {"kind": "log", "step": 2}])
    assert runs.read_metrics(tmp_path) == [{"kind": "log", "step": 1}, {"kind": "log", "step": 2}]
    assert no_temp_files(tmp_path) and (tmp_path / runs.METRICS).stat().st_mode & 0o777 == 0o644


def test_decode_cache_write_failure_only_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorfile, "save_file", enospc)
    with pytest.warns(UserWarning, match="decode cache .* not written"):
        data = load_dataset(DataSpec(root=tmp_path, image_size_px=16))
    assert data.train.images.shape[1:] == (3, 16, 16)
    assert no_temp_files(tmp_path / "decoded")


def _limit_file_size(n_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))

    return apply


def test_pretrain_that_cannot_write_its_checkpoint_ends_in_one_line(tmp_path, monkeypatch):
    """A real failing write: the kernel refuses files over 1 MB (RLIMIT_FSIZE) in a resumed pretrain."""
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert runner.invoke(app, ["pretrain", "--out", str(run), "--epochs", "1", *TINY]).exit_code == 0
    before = {p.name: p.read_bytes() for p in run.glob("*.safetensors")}
    assert min(map(len, before.values())) > 2**20
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "AFFSSL_CACHE": str(tmp_path / "cache2"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "affssl", "pretrain", "--resume", "--out", str(run), "--epochs", "2", "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(2**20))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "decode cache" in done.stderr  # the 1.4 MB cache: a warning only
    [line] = [s for s in done.stderr.splitlines() if s.startswith("error:")]
    assert f"could not write {run / runs.LAST}" in line and "File too large" in line and "MiB free there" in line
    assert {p.name: p.read_bytes() for p in run.glob("*.safetensors")} == before  # previous checkpoints intact
    assert no_temp_files(run) and json.loads((run / runs.SPEC).read_text())["train"]["epochs"] == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the injected tests cover it")
def test_read_only_run_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o500)
    try:
        result = runner.invoke(app, ["pretrain", "--out", str(run), "--epochs", "1", *TINY])
    finally:
        run.chmod(0o700)
    assert result.exit_code == 2 and "could not write" in result.output and "Traceback" not in result.output
