"""LARS (affssl.lars) and the weight-decay exclusion of 1-D tensors (affssl.optim).

Oracles: a naive per-tensor float64 reference written from You et al. 2017's equations (with the
peers' weight decay, clip and exclusion), torch.optim.SGD where every tensor is excluded, two gloo
processes against one, and an interrupted run resumed from its checkpoint against an uninterrupted one.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.distributed as dist
from conftest import run_gloo
from safetensors.torch import load_file
from torch import nn

from affssl import runs
from affssl.engine import pretrain
from affssl.lars import LARS
from affssl.optim import build_optimizer
from affssl.spec import OptimSpec, load_spec

SHAPES = [(4, 3, 3, 3), (5, 7), (7,), (2, 2)]  # conv, linear, a bias / norm scale, a tensor left at zero
LRS = [0.05, 0.2, 0.4, 0.1]  # a schedule: the rate changes between steps


def start() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
    tensors[3].zero_()  # ‖w‖ = 0: the ratio is left out, as the peers do
    return tensors


def grads(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    out = [torch.randn(s, generator=g, dtype=torch.float64) * 10 ** (i - 2) for i, s in enumerate(SHAPES)]
    return out


def norm(t: list[float]) -> float:
    return math.sqrt(sum(v * v for v in t))


def reference(steps: int, wd: float, eta: float, clip: bool, exclude: bool, mu: float = 0.9) -> list[list[float]]:
    """You et al. 2017 per tensor, element by element in Python floats (float64)."""
    ws = [t.flatten().tolist() for t in start()]
    bufs: list[list[float] | None] = [None] * len(ws)
    for k in range(steps):
        lr = LRS[k]
        for i, (w, g) in enumerate(zip(ws, [t.flatten().tolist() for t in grads(k)], strict=True)):
            if exclude and len(SHAPES[i]) < 2:
                d = g
            elif norm(w) > 0 and norm(g) > 0:
                trust = eta * norm(w) / (norm(g) + wd * norm(w) + 1e-8)
                if clip:
                    trust = min(trust / lr, 1.0)
                d = [trust * (gj + wd * wj) for gj, wj in zip(g, w, strict=True)]
            else:
                d = g
            bufs[i] = d if bufs[i] is None else [mu * b + dj for b, dj in zip(bufs[i], d, strict=True)]
            ws[i] = [wj - lr * b for wj, b in zip(w, bufs[i], strict=True)]
    return ws


def run_lars(steps: int, **kwargs) -> list[torch.Tensor]:
    params = [nn.Parameter(t) for t in start()]
    opt = LARS(params, lr=LRS[0], momentum=0.9, **kwargs)
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = LRS[k]
        for p, g in zip(params, grads(k), strict=True):
            p.grad = g
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize(("clip", "exclude"), [(True, True), (False, True), (True, False), (False, False)])
def test_lars_matches_the_papers_equations(steps, clip, exclude):
    got = run_lars(steps, weight_decay=1e-4, eta=0.02, clip_lr=clip, exclude_bias_norm=exclude)
    want = reference(steps, wd=1e-4, eta=0.02, clip=clip, exclude=exclude)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.flatten(), torch.tensor(w, dtype=torch.float64), rtol=1e-12, atol=1e-14)


def test_the_ratio_and_clip_actually_act():
    """The reference's branches differ, so the test above tells them apart."""
    a, b = reference(2, 1e-4, 0.02, True, True), reference(2, 1e-4, 0.02, False, True)
    c = reference(2, 1e-4, 0.02, True, False)
    assert a[0] != b[0] and a[2] != c[2] and a[2] == b[2]


def test_lars_with_every_tensor_excluded_is_sgd_bit_for_bit():
    torch.manual_seed(0)
    make = lambda: [nn.Parameter(torch.randn(n)) for n in (3, 8, 5)]  # noqa: E731  1-D only: all excluded
    ours, theirs = make(), make()
    for a, b in zip(ours, theirs, strict=True):
        b.data.copy_(a.data)
    lars = LARS(ours, lr=0.3, momentum=0.9, weight_decay=1e-4, eta=0.02)
    sgd = torch.optim.SGD(theirs, lr=0.3, momentum=0.9, weight_decay=0.0, foreach=False)  # no decay: excluded
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        lars.step()
        sgd.step()
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
            assert torch.equal(lars.state[a]["momentum_buffer"], sgd.state[b]["momentum_buffer"])


def test_a_tensor_without_gradient_keeps_its_value_and_momentum():
    p, q = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2, 2))
    opt = LARS([p, q], lr=0.1)
    p.grad, q.grad = torch.ones(2, 2), torch.ones(2, 2)
    opt.step()
    before, buf = q.detach().clone(), opt.state[q]["momentum_buffer"].clone()
    p.grad, q.grad = torch.ones(2, 2), None
    opt.step()
    assert torch.equal(q, before) and torch.equal(opt.state[q]["momentum_buffer"], buf)


# ---------------------------------------------------------------------------------------------
# The spec and the other optimizers


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))


def test_exclusion_resolves_per_optimizer_and_leaves_existing_runs_alone():
    assert OptimSpec(name="lars").exclude_bias_norm is True
    assert OptimSpec(name="adamw").exclude_bias_norm is False
    m = model()
    groups = build_optimizer(list(m.parameters()), OptimSpec(name="adam")).param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-5  # as before this option existed
    assert isinstance(build_optimizer(list(m.parameters()), OptimSpec(name="lars", lr=0.3)), LARS)


@pytest.mark.parametrize("name", ["adamw", "sgd", "adam"])
def test_excluded_vectors_get_no_weight_decay(name):
    """With zero gradients only weight decay moves a tensor: matrices shrink, vectors stay."""
    m = model()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    spec = OptimSpec(name=name, lr=0.1, weight_decay=0.5, exclude_bias_norm=True)
    opt = build_optimizer([{"params": list(m.parameters()), "lr_scale": 1.0}], spec)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 4] and all("lr_scale" in g for g in opt.param_groups)
    opt.step()
    for n, p in m.named_parameters():
        assert torch.equal(p, before[n]) == (p.ndim < 2), n


# ---------------------------------------------------------------------------------------------
# Two processes take the same steps as one


WORLD, BATCH = 2, 8


def ddp_steps(rows: slice) -> dict[str, torch.Tensor]:
    """Three LARS steps of a small float64 model, each on rows of a fixed global batch; DDP when distributed."""
    net = model().double()
    trained = nn.parallel.DistributedDataParallel(net) if dist.is_initialized() else net
    opt = LARS(net.parameters(), lr=0.4, momentum=0.9, weight_decay=1e-4, eta=0.02)
    g = torch.Generator().manual_seed(1)
    for lr in (0.1, 0.4, 0.2):
        x, y = torch.randn(BATCH, 6, generator=g, dtype=torch.float64), torch.randn(BATCH, 3, generator=g,
                                                                                    dtype=torch.float64)  # fmt: skip
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        ((trained(x[rows]) - y[rows]) ** 2).mean().backward()  # a per-sample mean: DDP's average is the global one
        opt.step()
    return {n: p.detach().clone() for n, p in net.named_parameters()} | {
        f"momentum.{i}": opt.state[p]["momentum_buffer"].clone() for i, p in enumerate(net.parameters())
    }


def test_two_processes_take_the_same_lars_steps_as_one(tmp_path):
    n = BATCH // WORLD
    shards = run_gloo(lambda rank: ddp_steps(slice(rank * n, (rank + 1) * n)), tmp_path, WORLD)
    one = ddp_steps(slice(None))
    for shard in shards:
        assert shard.keys() == one.keys()
        for k in one:
            torch.testing.assert_close(shard[k], one[k], rtol=1e-12, atol=1e-14, msg=lambda m, k=k: f"{k}: {m}")


# ---------------------------------------------------------------------------------------------
# Exact resume


def test_lars_state_survives_checkpoint_and_resume_exactly(tmp_path):
    spec = load_spec("default", ["backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "data.limit=128",
                                 "optim.name=lars", "optim.lr=0.3", "optim.weight_decay=1e-4", "optim.schedule=cosine",
                                 "optim.warmup_epochs=1", "train.epochs=2", "train.checkpoint_every=1",
                                 "train.precision=fp32"])  # fmt: skip
    full = load_file(pretrain(spec, tmp_path / "full", show_progress=False))
    assert any(k.endswith(".momentum_buffer") for k in full)
    run = tmp_path / "resumed"  # the same run, stopped after epoch 1
    run.mkdir()
    shutil.copy(runs.epoch_checkpoint(tmp_path / "full", 1), run / runs.LAST)
    shutil.copy(tmp_path / "full" / runs.SPEC, run / runs.SPEC)
    shutil.copy(tmp_path / "full" / runs.METRICS, run / runs.METRICS)
    resumed = load_file(pretrain(spec, run, resume=True, show_progress=False))
    assert resumed.keys() == full.keys()
    assert [k for k in full if not torch.equal(full[k], resumed[k])] == []
