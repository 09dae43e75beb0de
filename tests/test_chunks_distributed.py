"""The chunks storage under torchrun (gloo, CPU): exact resume with 2 processes, and 2 nodes equal 1 node of 2.

Each run is the CLI in subprocesses on a generated folder of 48 tiny JPEGs; "exact" is torch.equal on every
tensor of the final checkpoint. The two-node run is two torchrun agents on this machine meeting through a
c10d rendezvous on 127.0.0.1, each with its own cache folder (AFFSSL_CACHE), so each node writes its chunks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("litdata")

from conftest import assert_same_tensors, header
from test_chunks import TINY, make_folder
from test_faults import step_lines, wait_for, worker_of_rank

from affssl import runs

pytestmark = pytest.mark.slow


def sets(folder: Path) -> list[str]:
    tiny = [o if not o.startswith("train.batch_size=") else "train.batch_size=8" for o in TINY]
    overrides = [*tiny, f"data.dataset={folder}", "data.storage=chunks", "data.workers=1"]
    return [a for o in overrides for a in ("--set", o)]  # 6 steps an epoch


def launch(run: Path, cache: Path, launcher: list[str], *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "AFFSSL_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "affssl", "pretrain", "--no-progress",
           "--out", str(run), *args]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


ONE_NODE = ["--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("jpegs"))


@pytest.fixture(scope="module")
def full(tmp_path_factory, folder) -> Path:
    """An uninterrupted 2-process chunks run on one node."""
    run = tmp_path_factory.mktemp("full") / "run"
    proc = launch(run, run.parent / "cache", ONE_NODE, *sets(folder))
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return run


def test_sigterm_to_one_rank_inside_an_epoch_then_resume_is_bit_identical(tmp_path, folder, full):
    run = tmp_path / "run"
    proc = launch(run, tmp_path / "cache", ONE_NODE, *sets(folder))
    wait_for(proc, lambda: any(s >= 1 for _, s in step_lines(run)), timeout_s=300)
    os.kill(worker_of_rank(proc.pid, 1), signal.SIGTERM)
    assert proc.wait(timeout=300) != 0
    assert "stopped by SIGTERM" in proc.stderr.read()
    assert int(header(run / runs.LAST).get("epoch_step", 0)) > 0  # inside an epoch: the loader's position matters
    resumed = launch(run, tmp_path / "cache", ONE_NODE, "--resume", *sets(folder))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same_tensors(full / runs.LAST, run / runs.LAST)
    assert step_lines(run) == step_lines(full)


def test_two_nodes_take_the_same_steps_as_two_processes_on_one_node(tmp_path, folder, full):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = ["--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
            "--rdzv_id=affssl-test", "--max_restarts=0"]  # fmt: skip
    run = tmp_path / "run"
    agents = [launch(run, tmp_path / f"cache-node{n}", node, *sets(folder)) for n in range(2)]
    for agent in agents:
        assert agent.wait(timeout=300) == 0, agent.stderr.read()
    assert_same_tensors(full / runs.LAST, run / runs.LAST)
    for n in range(2):  # each node wrote its own chunks, once
        assert len(list((tmp_path / f"cache-node{n}" / "chunks").iterdir())) == 1
