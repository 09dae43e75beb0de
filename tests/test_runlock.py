"""One writer per run folder: a live holder refuses a second pretrain; a dead holder's lock is taken over."""

import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from affssl import runlock, runs
from affssl.cli import app
from affssl.errors import UserError

runner = CliRunner()
TINY = ["--set", "backbone.width=4", "--set", "data.image_size_px=16", "--batch-size", "32", "--limit", "64",
        "--epochs", "1", "--no-progress"]  # fmt: skip
HOLDER = "import sys; from pathlib import Path; from affssl import runlock\n" \
         "with runlock.hold(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()\n"  # fmt: skip


def invoke(*args):
    return runner.invoke(app, ["pretrain", *map(str, args)])


def assert_refused(result, fragment):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert fragment in " ".join(result.output.split()), result.output


@pytest.fixture
def finished_run(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    result = invoke("--out", run, *TINY)
    assert result.exit_code == 0, result.output
    assert not (run / runs.LOCK).exists()  # released at the end
    return run


def test_same_process_holder_refuses_pretrain_resume_and_overwrite(finished_run):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    with runlock.hold(finished_run):
        assert_refused(invoke("--out", finished_run, "--overwrite", *TINY), f"is being written by pid {os.getpid()}")
        assert_refused(invoke("--out", finished_run, "--resume", "--epochs", "2"), "wait for it to end")
        with pytest.raises(runlock.RunLockedError), runlock.hold(finished_run):
            pass
    after = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    assert after == before  # --overwrite deleted nothing while the run was held


def test_live_subprocess_holder_refuses_then_its_stale_lock_is_taken_over(finished_run):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(finished_run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert_refused(invoke("--out", finished_run, "--resume", "--epochs", "2"), f"pid {holder.pid} on ")
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the file stays, the flock goes
        holder.wait()
    assert (finished_run / runs.LOCK).read_text().startswith(f"pid {holder.pid} ")
    result = invoke("--out", finished_run, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "took over the lock" in result.output and f"pid {holder.pid}" in result.output
    assert not (finished_run / runs.LOCK).exists()


def test_lock_file_of_a_dead_pid_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / runs.LOCK).write_text("pid 999999 on elsewhere since 2020-01-01 00:00:00\n")
    with runlock.hold(run) as stale:
        assert stale == "pid 999999 on elsewhere since 2020-01-01 00:00:00"
        assert (run / runs.LOCK).read_text().startswith(f"pid {os.getpid()} on ")
    assert not (run / runs.LOCK).exists()


def test_a_stale_lock_alone_does_not_make_the_folder_busy(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    run.mkdir()
    (run / runs.LOCK).write_text("pid 999999 on elsewhere since 2020-01-01 00:00:00\n")
    result = invoke("--out", run, *TINY)  # no --overwrite needed
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "epoch-0001.safetensors", runs.LAST, runs.METRICS,
                                                     runs.SPEC]  # fmt: skip


def test_out_naming_a_file_is_one_line(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UserError, match="is a file"), runlock.hold(path):
        pass
