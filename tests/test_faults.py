"""Runs survive faults: divergence stops with one line, signals and periodic step checkpoints resume bit-exactly.

The reference for every resume is the same spec trained without a stop; "exact" means torch.equal on
every tensor of the final checkpoint (CPU).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_tensors, header, signal_at
from safetensors.torch import load_file
from typer.testing import CliRunner

from affssl import faults, runs
from affssl.cli import app
from affssl.engine import pretrain
from affssl.spec import RunSpec, load_spec

# Digits, ResNet-18 of width 4 at 16 px: 256 images in batches of 32 are 8 steps an epoch.
TINY = ["backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "data.limit=256", "train.epochs=2",
        "train.log_every=1", "method.proj_hidden=32", "method.proj_out=16", "affine.head_hidden=32"]  # fmt: skip


def tiny(*overrides: str) -> RunSpec:
    return load_spec("default", [*TINY, *overrides])


def step_lines(run: Path) -> list[tuple[str, int]]:
    """(kind, step) of the training records (a host record marks each start or resume, not a step)."""
    return [(r["kind"], r["step"]) for r in runs.read_metrics(run) if "step" in r and r["kind"] != "host"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every resume must reproduce."""
    run = tmp_path_factory.mktemp("reference") / "run"
    pretrain(tiny(), run, show_progress=False)
    return run


# ---------------------------------------------------------------------------------------------
# Divergence


def test_nonfinite_loss_stops_at_that_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    # SGD at lr 1e4 turns the loss into NaN at step 3; a step checkpoint was written after step 2.
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pretrain", "--no-progress", "--out", str(out), "--set", "optim.name=sgd",
                                      "--set", "optim.lr=1e4", "--set", "train.checkpoint_every_steps=1",
                                      "--set", "train.max_loss=inf",  # the non-finite check alone
                                      *[a for o in TINY for a in ("--set", o)]])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not finite at step 3" in lines[0] and "lower optim.lr" in lines[0], result.output
    assert "loss nan" in lines[0] and "Traceback" not in result.output
    assert int(header(out / runs.LAST)["step"]) == 2  # the optimizer never stepped on the NaN loss
    assert all(torch.isfinite(t).all() for t in load_file(out / runs.LAST).values() if t.is_floating_point())
    assert max(s for _, s in step_lines(out)) == 2


def test_max_loss_stops_adam_at_lr_1e4(tmp_path):
    # Adam at lr 1e4 keeps the loss finite (~1e18 after 2 epochs) on this model: train.max_loss catches it.
    out = tmp_path / "run"
    sets = [a for o in [*TINY[:3], "train.log_every=1", "train.max_loss=1e3"] for a in ("--set", o)]
    result = CliRunner().invoke(app, ["pretrain", "--no-progress", "--out", str(out), "--epochs", "2", "--limit",
                                      "512", "--set", "optim.lr=1e4", *sets])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "passed train.max_loss 1000" in lines[0], result.output
    step = int(lines[0].split(" at step ")[1].split()[0])
    if not (out / runs.LAST).exists():  # no epoch ended before the divergence: the failed run left nothing
        assert not out.exists()
        return
    metrics = [r for r in runs.read_metrics(out) if r["kind"] == "step"]
    assert max(r["step"] for r in metrics) == step - 1 and all(r["loss"] <= 1e3 for r in metrics)
    assert int(header(out / runs.LAST)["step"]) < step
    assert all(torch.isfinite(t).all() for t in load_file(out / runs.LAST).values() if t.is_floating_point())


def test_default_max_loss_stops_the_reported_lr_1e4_run(tmp_path):
    # The report: `affssl pretrain --set optim.lr=1e4 --epochs 2 --limit 512` said "done" at loss 1.8e19.
    out = tmp_path / "run"
    sets = [a for o in TINY[:3] for a in ("--set", o)]
    result = CliRunner().invoke(app, ["pretrain", "--no-progress", "--out", str(out), "--epochs", "2", "--limit",
                                      "512", "--set", "optim.lr=1e4", *sets])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "passed train.max_loss 1e+06" in result.output and "optim.lr" in result.output, result.output


def test_guard_makes_a_fused_optimizer_skip_the_bad_step():
    # On CUDA the flag is read only at log steps; in between a fused optimizer must not move.
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([w], lr=0.1, fused=True)
    guard = faults.DivergenceGuard(None, torch.device("cpu"))
    guard.protect(optimizer)
    for step, scale in enumerate((1.0, float("nan"), 1.0)):
        loss = (w * scale).sum()
        guard.observe(step, {"loss": loss.detach()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0:
            after_first = w.detach().clone()
    assert torch.equal(w.detach(), after_first) and float(optimizer.state[w]["step"]) == 1
    error = guard.error(lr=0.1)
    assert isinstance(error, faults.Diverged) and "not finite at step 2" in str(error)


# ---------------------------------------------------------------------------------------------
# Stop signals and step checkpoints


@pytest.mark.parametrize(("signum", "step", "code"), [(signal.SIGTERM, 5, 143), (signal.SIGUSR1, 8, 138)])
def test_signal_writes_a_step_checkpoint_and_resume_is_bit_identical(tmp_path, monkeypatch, reference, signum,
                                                                     step, code):  # fmt: skip
    # Step 5 is inside epoch 1; step 8 is its last (the epoch checkpoint serves, then the run stops).
    run = tmp_path / "run"
    before = signal.getsignal(signum)
    signal_at(monkeypatch, signum, step)
    with pytest.raises(faults.Preempted) as stopped:
        pretrain(tiny(), run, show_progress=False)
    monkeypatch.undo()
    assert signal.getsignal(signum) is before  # the previous handler is back
    assert stopped.value.exit_code == code
    assert f"after step {step}" in str(stopped.value) and f"--resume --out {run}" in str(stopped.value)
    meta = header(run / runs.LAST)
    assert (int(meta["epoch"]), int(meta["step"]), int(meta.get("epoch_step", 0))) == (step // 8, step, step % 8)
    assert max(s for _, s in step_lines(run)) == step

    pretrain(tiny(), run, resume=True, show_progress=False)
    assert_same_tensors(reference / runs.LAST, run / runs.LAST)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("img_per_s", "epoch_time_s", "monitor_time_s")}  # noqa: E731
    trained = lambda path: [strip(r) for r in runs.read_metrics(path) if r.get("kind") != "host"]  # noqa: E731
    assert trained(run) == trained(reference)
    # each start says its host
    assert [r["step"] for r in runs.read_metrics(run) if r.get("kind") == "host"] == [0, step]


def test_stop_signals_restore_handlers_and_record_the_first_signal():
    mine = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGUSR1, mine)
    try:
        with faults.StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signum == signal.SIGUSR1
            with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait for the step
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGUSR1) is mine
    finally:
        signal.signal(signal.SIGUSR1, previous)


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen([sys.executable, "-m", "affssl", "pretrain", "--no-progress", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(proc: subprocess.Popen, ready, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before the test could stop it: " + proc.stderr.read()


@pytest.mark.slow
def test_sigterm_from_outside_then_cli_resume_is_bit_identical(tmp_path, reference):
    run = tmp_path / "run"
    proc = cli("--out", str(run), *[a for o in TINY for a in ("--set", o)])
    wait_for(proc, lambda: any(k == "step" for k, _ in step_lines(run)))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    lines = [line for line in proc.stderr.read().splitlines() if line.strip()]
    assert len(lines) == 1 and "stopped by SIGTERM after step" in lines[0], lines
    assert f"affssl pretrain --resume --out {run}" in lines[0]
    stopped_at = int(header(run / runs.LAST)["step"])
    assert max(s for _, s in step_lines(run)) == stopped_at

    resumed = cli("--resume", "--out", str(run))
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()
    assert_same_tensors(reference / runs.LAST, run / runs.LAST)
    assert step_lines(run) == step_lines(reference)


@pytest.mark.slow
def test_step_checkpoints_survive_sigkill_and_resume_exactly(tmp_path, reference):
    run = tmp_path / "run"
    proc = cli("--out", str(run), "--set", "train.checkpoint_every_steps=3", *[a for o in TINY for a in ("--set", o)])

    def inside_epoch() -> bool:
        try:
            return int(header(run / runs.LAST).get("epoch_step", 0)) > 0
        except Exception:  # not written yet
            return False

    wait_for(proc, inside_epoch)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    meta = header(run / runs.LAST)
    assert int(meta["step"]) % 3 == 0 and int(meta["epoch_step"]) > 0 and json.loads(meta["position_sums"])
    resumed = cli("--resume", "--out", str(run))
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()
    assert_same_tensors(reference / runs.LAST, run / runs.LAST)
    assert step_lines(run) == step_lines(reference)  # lines past the checkpoint were dropped, then replayed


# ---------------------------------------------------------------------------------------------
# Two processes (torchrun, gloo): a signal to one rank stops both at the same step


def torchrun(run: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "affssl",
           "pretrain", "--no-progress", "--out", str(run), *args]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker_of_rank(agent: int, rank: int) -> int:
    """The pid of torchrun's worker with RANK=rank (a child of the agent process)."""
    for proc in Path("/proc").iterdir():
        try:
            child = proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == agent
            if child and f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    raise AssertionError(f"no worker of rank {rank} under process {agent}")


@pytest.mark.slow
def test_torchrun_signal_to_one_rank_stops_all_then_resume_is_bit_identical(tmp_path):
    sets = [a for o in ["backbone.width=4", "data.image_size_px=8", "train.batch_size=32", "data.limit=256",
                        "train.epochs=2", "train.log_every=1"] for a in ("--set", o)]  # fmt: skip
    full = torchrun(tmp_path / "full", *sets)
    assert full.wait(timeout=300) == 0, full.stderr.read()

    run = tmp_path / "run"
    proc = torchrun(run, *sets)
    wait_for(proc, lambda: any(k == "step" for k, _ in step_lines(run)), timeout_s=300)
    os.kill(worker_of_rank(proc.pid, 1), signal.SIGTERM)
    assert proc.wait(timeout=300) != 0
    assert "stopped by SIGTERM" in proc.stderr.read()
    meta = header(run / runs.LAST)
    stopped_at = int(meta["step"])
    assert max(s for _, s in step_lines(run)) == stopped_at  # rank 0 stopped at rank 1's step
    if int(meta.get("epoch_step", 0)):
        assert load_file(run / runs.LAST)["position.views"].shape[0] == 2  # both ranks' generators

    resumed = torchrun(run, "--resume", *sets)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same_tensors(tmp_path / "full" / runs.LAST, run / runs.LAST)
    assert step_lines(run) == step_lines(tmp_path / "full")
