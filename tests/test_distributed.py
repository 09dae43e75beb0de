"""Two processes equal one: 2 gloo CPU ranks, each with half of a batch, against 1 process on all of it.

(a) the pure losses through `affssl.distributed.gather`, a linear projector wrapped in DDP;
(b) one whole Learner step (ResNet-18 of width 4 at 8 px, affine module on) with the engine's
    `sync_batchnorm` and DDP, fed fixed views (and 2 local views: DINO, SimCLR and BYOL multi-crop)
    and φ instead of the random augment path;
and the CLI under torchrun: rank 0 alone writes one checkpoint set, --resume continues it.

What must match: every rank computes the global SimCLR/Barlow/VICReg loss (the mean over ranks for
the per-sample BYOL, MoCo v3, SimSiam and DINO losses and the affine term; MoCo v3's queries meet the
keys of the global batch; DINO's centre averages the teacher outputs of every process); DDP's
averaged parameter gradient equals the gradient of one process; an input shard's gradient is
world_size × that of one process (the gather's backward sums the ranks' identical losses and only
parameter gradients are averaged by DDP).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import run_gloo
from safetensors import safe_open
from torch import nn

from affssl import affine, augment, distributed, runs
from affssl.learner import Learner
from affssl.methods.barlow import barlow_loss
from affssl.methods.byol import byol_loss
from affssl.methods.dino import dino_loss
from affssl.methods.mocov3 import mocov3_loss
from affssl.methods.simclr import nt_xent
from affssl.methods.simsiam import simsiam_loss
from affssl.methods.vicreg import vicreg_loss
from affssl.spec import load_spec

WORLD, BATCH, SIZE = 2, 8, 8  # ranks, global batch, image side (px)
BASES = ("simclr", "byol", "barlow", "vicreg", "mocov3", "simsiam", "dino")
LEARNERS = (*BASES, "simclr+local", "byol+local")  # (b) also with local views (DINO always has 2)
PER_SAMPLE = ("byol", "mocov3", "simsiam", "dino", "byol+local")  # each rank's loss is the mean over its own rows
LOCAL_PX = 4
TOL = {"atol": 1e-5, "rtol": 1e-5}


def tiny_spec(base: str):
    name, _, local = base.partition("+")
    extra = ["method.prototypes=16"] if name == "dino" else []
    if local or name == "dino":
        extra += ["augment.local_crops=2", f"augment.local_size_px={LOCAL_PX}"]
    common = ["backbone.width=4", f"data.image_size_px={SIZE}", "method.proj_hidden=16", "method.proj_out=8",
              "affine.head_hidden=16"]  # fmt: skip
    return load_spec("default", [f"method.name={name}", *common, *extra])


def inputs() -> dict[str, torch.Tensor]:
    """The global batch: features for (a), views and φ for (b)."""
    g = torch.Generator().manual_seed(0)
    data = {k: torch.randn(BATCH, 6, generator=g) for k in ("h1", "h2")}
    data |= {k: torch.randn(BATCH, 5, generator=g) for k in ("t1", "t2")}
    data |= {k: torch.rand(BATCH, 3, SIZE, SIZE, generator=g) for k in ("v1", "v2")}
    data["local"] = torch.rand(2, BATCH, 3, LOCAL_PX, LOCAL_PX, generator=g)  # (crops, B, C, h, w)
    data["center"] = torch.randn(1, 5, generator=g)
    data["phi"] = affine.sample(BATCH, tiny_spec("simclr").affine, SIZE, g)  # (B, 6)
    return data


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 5)

    def forward(self, h1, h2):
        return self.proj(h1), self.proj(h2)


def step_a(base: str, data: dict, rows: slice) -> dict[str, torch.Tensor]:
    """Pure loss + gather: returns the loss, the shards' gradients and the (DDP-averaged) projector gradients."""
    torch.manual_seed(1)
    pair = Pair()
    model = nn.parallel.DistributedDataParallel(pair) if distributed.world_size() > 1 else pair
    h1, h2 = (data[k][rows].clone().requires_grad_() for k in ("h1", "h2"))
    z1, z2 = model(h1, h2)
    if base == "simclr":
        loss = nt_xent(distributed.gather(z1), distributed.gather(z2), 0.5)
    elif base == "barlow":
        loss = barlow_loss(distributed.gather(z1), distributed.gather(z2), 5e-3)
    elif base == "vicreg":
        loss = vicreg_loss(distributed.gather(z1), distributed.gather(z2), 25.0, 25.0, 1.0)
    elif base == "mocov3":  # this rank's queries against the keys of the global batch
        k1, k2 = distributed.gather(data["t1"][rows]), distributed.gather(data["t2"][rows])
        loss = mocov3_loss(z1, z2, k1, k2, 0.2, offset=distributed.rank() * z1.shape[0])
    elif base == "simsiam":
        loss = simsiam_loss(z1, z2, data["t1"][rows], data["t2"][rows])
    elif base == "dino":  # per-sample, like BYOL; the centre (global) is checked in (b)
        teacher = torch.stack([data["t1"][rows], data["t2"][rows]])  # (2, b, 5) logits
        loss = dino_loss(torch.stack([z1, z2]), teacher, data["center"], 0.1, 0.04)
    else:  # per-sample: no gather; DDP's average over ranks makes the global mean
        loss = byol_loss(z1, z2, data["t1"][rows], data["t2"][rows])
    loss.backward()
    return {"loss": loss.detach(), "grad.h1": h1.grad, "grad.h2": h2.grad,
            **{f"grad.{n}": p.grad for n, p in pair.named_parameters()}}  # fmt: skip


@contextmanager
def fixed_views(x: torch.Tensor, phi: torch.Tensor, local: torch.Tensor):
    """The Learner's random views and φ replaced by given ones: x is (b, 2, C, H, W), local (M·b, C, h, w)."""
    with (mock.patch.object(augment, "views", lambda x, spec, gen: (x[:, 0], x[:, 1])),
          mock.patch.object(augment, "local_views", lambda x, spec, gen, sizes=None: local),
          mock.patch.object(affine, "sample", lambda n, spec, size, gen: phi)):  # fmt: skip
        yield x


def step_b(base: str, data: dict, rows: slice) -> dict[str, torch.Tensor]:
    """One Learner step as the engine runs it: loss, backward, SGD step, the method's after_step.

    In float64: the code is the same for any dtype, and float32 round-off through 20 BatchNorm
    layers reaches ~5e-6 of the largest gradient (up to ~90 for Barlow), above an atol of 1e-5;
    in float64 one process and two agree to ~1e-12. (The warp itself computes in float32.)
    """
    torch.manual_seed(0)
    learner = Learner(tiny_spec(base)).double()
    model: nn.Module = learner
    if distributed.world_size() > 1:
        learner = distributed.sync_batchnorm(learner)
        model = nn.parallel.DistributedDataParallel(learner)
    views = torch.stack([data["v1"][rows], data["v2"][rows]], 1).double()  # (b, 2, C, H, W)
    local = data["local"][:, rows].flatten(0, 1).double()  # (2·b, C, h, w), view c of image i in row c·b + i
    with fixed_views(views, data["phi"][rows], local) as x:
        loss, parts = model(x, None, None)
    loss.backward()
    out = {k: v.detach() for k, v in parts.items()}
    out |= {f"grad.{n}": p.grad.clone() for n, p in learner.named_parameters() if p.requires_grad}
    torch.optim.SGD([p for p in learner.parameters() if p.requires_grad], lr=0.1).step()
    learner.method.after_step(learner.backbone, 0.5)  # BYOL, MoCo v3, DINO: EMA from the unwrapped online network
    return out | {f"state.{k}": v.clone() for k, v in learner.state_dict().items()}


def run_all(rows: slice) -> dict[str, dict[str, torch.Tensor]]:
    data = inputs()
    return {f"a/{base}": step_a(base, data, rows) for base in BASES} | {
        f"b/{base}": step_b(base, data, rows) for base in LEARNERS
    }


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    n = BATCH // WORLD
    return run_gloo(lambda rank: run_all(slice(rank * n, (rank + 1) * n)), tmp_path_factory.mktemp("ddp"), WORLD)


@pytest.fixture(scope="module")
def single() -> dict[str, dict[str, torch.Tensor]]:
    return run_all(slice(None))


@pytest.mark.parametrize("base", BASES)
def test_loss_and_gather_match_one_process(ranks, single, base):
    ref, shards = single[f"a/{base}"], [r[f"a/{base}"] for r in ranks]
    mean_loss = sum(s["loss"] for s in shards) / WORLD
    torch.testing.assert_close(mean_loss, ref["loss"], **TOL)
    if base not in PER_SAMPLE:  # a gathered loss is the global loss on every rank
        for s in shards:
            torch.testing.assert_close(s["loss"], ref["loss"], **TOL)
    n = BATCH // WORLD
    for r, s in enumerate(shards):
        for k in ("grad.h1", "grad.h2"):  # the shard's gradient: world × the single-process one
            torch.testing.assert_close(s[k] / WORLD, ref[k][r * n : (r + 1) * n], **TOL)
        for k in ("grad.proj.weight", "grad.proj.bias"):  # DDP-averaged: exactly the single-process one
            torch.testing.assert_close(s[k], ref[k], **TOL)


@pytest.mark.parametrize("base", LEARNERS)
def test_learner_step_with_sync_batchnorm_matches_one_process(ranks, single, base):
    ref, shards = single[f"b/{base}"], [r[f"b/{base}"] for r in ranks]
    for k in ("loss", "loss_ssl", "loss_affine"):
        torch.testing.assert_close(sum(s[k] for s in shards) / WORLD, ref[k], **TOL)
    assert any(k.startswith("grad.backbone.") for k in ref) and any(k.startswith("grad.head.") for k in ref)
    for s in shards:
        assert s.keys() == ref.keys()
        for k in ref:
            if k.startswith(("grad.", "state.")):  # gradients, then weights, BN buffers, EMA copies, DINO's centre
                torch.testing.assert_close(s[k], ref[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


def test_global_batchnorm_is_batchnorm_in_one_process():
    bn = nn.BatchNorm2d(3)
    converted = distributed.sync_batchnorm(nn.Sequential(bn))[0]
    assert isinstance(converted, distributed.GlobalBatchNorm) and converted.weight is bn.weight
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(converted(x), nn.BatchNorm2d(3)(x))
    assert converted.running_mean is bn.running_mean and int(bn.num_batches_tracked) == 1


# ---------------------------------------------------------------------------------------------
# The command line under torchrun


def torchrun(run: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "affssl",
           "pretrain", "--out", str(run), "--set", "backbone.width=4", "--set", "data.image_size_px=8",
           "--batch-size", "32", "--limit", "128", "--no-progress", *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_torchrun_rank0_writes_one_checkpoint_set_then_resumes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AFFSSL_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "run"
    first = torchrun(run, "--epochs", "1", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("done") == 1  # only rank 0 prints
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "epoch-0001.safetensors", "last.safetensors",
                                                     runs.METRICS, runs.SPEC]  # fmt: skip
    kinds = [r["kind"] for r in runs.read_metrics(run)]
    assert kinds.count("params") == 1 and kinds.count("epoch") == 1  # one writer
    assert "monitor_knn_top1" in runs.read_metrics(run)[-1]  # the online monitor, scored by both processes

    again = torchrun(run, "--epochs", "1", env=env)  # rank 0 refuses the full folder; rank 1 must not hang
    assert again.returncode != 0 and "already holds files" in again.stderr

    resumed = torchrun(run, "--epochs", "2", "--resume", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with safe_open(str(run / runs.LAST), framework="pt") as f:
        assert json.loads(f.metadata()["epoch"]) == 2
    records = runs.read_metrics(run)
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["epoch-0001.safetensors", "epoch-0002.safetensors",
                                                                 "last.safetensors"]  # fmt: skip
