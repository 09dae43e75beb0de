"""Shared fixtures and helpers: the real CIFAR-10 image folder, tiny checkpoints, torch's thread count kept,
checkpoint headers and tensors compared, functions run in forked gloo processes, a signal at a step.

Test modules import the plain helpers by name (`from conftest import header`).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

os.environ.setdefault("AFFSSL_BUSY_SAMPLE_S", "0")  # no half-second /proc/stat sample per run (tests/test_cpus.py)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10 as train/<class>/*.jpg + test/<class>/*.jpg; skips when the tarball is absent."""
    tarball = SHARED_DATA / "cifar10-jpg.tar.gz"
    if not tarball.is_file():
        pytest.skip(f"{tarball} is absent (the shared data folder is not next to the project)")
    root = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(tarball, "r|gz") as tar:  # streaming: one pass over the archive
        tar.extractall(root, filter="data")
    return root


# ---------------------------------------------------------------------------------------------
# Checkpoints for the eval and export tests: untrained but complete (format affssl.train/1).

TINY = ("backbone.width=8", "data.image_size_px=16", "data.dataset=digits")


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """Factory: write RUN/last.safetensors for a spec (preset default + overrides), weights from seed 0.

    BatchNorm running statistics and affine weights are randomised, so a test notices a model that
    extracts in train mode or loads a tensor under the wrong key.
    """
    import torch

    from affssl.engine import save_checkpoint
    from affssl.learner import Learner
    from affssl.spec import load_spec

    def make(overrides: tuple[str, ...] = TINY, name: str = "run") -> Path:
        spec = load_spec("default", list(overrides))
        torch.manual_seed(0)
        learner = Learner(spec)
        gen = torch.Generator().manual_seed(1)
        for m in learner.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))
        path = tmp_path_factory.mktemp(name) / "last.safetensors"
        optimizer = torch.optim.Adam(learner.parameters())
        save_checkpoint(path, learner, optimizer, spec, {"epoch": 1, "step": 1})
        return path

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_checkpoint) -> Path:
    """ResNet-18 of width 8 at 16 px, SimCLR + affine module, data set digits."""
    return make_checkpoint(TINY, "tiny")


# ---------------------------------------------------------------------------------------------
# Threads, checkpoints, gloo processes


@pytest.fixture()
def keep_threads(monkeypatch):
    """Runs and evals set torch's threads for the whole process: give later tests theirs back (no OMP cap)."""
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def signal_at(monkeypatch, signum: int, step: int) -> None:
    """Deliver a real signal to this process right after the metrics line of `step` is written."""
    from affssl import runs

    append = runs.append_metrics

    def append_then_signal(run, record):
        append(run, record)
        if record.get("kind") == "step" and record["step"] == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(runs, "append_metrics", append_then_signal)


def header(path: Path) -> dict:
    """A safetensors file's metadata (a checkpoint's header)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def assert_same_tensors(a: Path, b: Path) -> None:
    """Two safetensors files hold the same names and bit-identical tensors."""
    import torch
    from safetensors.torch import load_file

    ta, tb = load_file(a), load_file(b)
    assert ta.keys() == tb.keys()
    assert [k for k in ta if not torch.equal(ta[k], tb[k])] == []


def _gloo_rank(rank: int, fn: Callable[[int], object], folder: str, world: int) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))  # fmt: skip
    try:
        torch.save(fn(rank), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_gloo(fn: Callable[[int], object], folder: Path, world: int = 2) -> list:
    """fn(rank) in `world` forked gloo CPU processes of one thread each; what each returned (torch.save-able), by rank.

    fork: the children reuse this process's imports (spawn re-imports torch: ~10 s per child here).
    """
    import torch
    import torch.multiprocessing as mp

    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        mp.start_processes(_gloo_rank, args=(fn, str(folder), world), nprocs=world, start_method="fork")
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(world)]
