"""CUDA paths: bf16 autocast, channels_last, fused Adam, data and views on the device, SyncBatchNorm.

Every test carries the `cuda` marker and skips without a CUDA device (CI has none);
`benchmarks/gpu_check.sh` runs them on a GPU machine with `pytest -m cuda`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from affssl import affine, augment, precision, runs
from affssl.affine_block import AffineEstimation
from affssl.backbones import build_backbone
from affssl.engine import pretrain
from affssl.optim import build_optimizer
from affssl.spec import AffineSpec, AugmentSpec, BackboneSpec, OptimSpec, load_spec
from affssl.streams import generator

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run benchmarks/gpu_check.sh)"),
]
CUDA = torch.device("cuda")
TINY = ["backbone.width=8", "data.image_size_px=16", "train.batch_size=64", "data.limit=256", "train.device=cuda"]


def test_auto_policy_on_cuda_is_bf16_channels_last():
    policy = precision.resolve("auto", "auto", CUDA)
    assert policy.dtype == torch.bfloat16 and policy.memory_format == torch.channels_last


@pytest.mark.parametrize("base", ["simclr", "byol", "barlow", "vicreg", "mocov3", "simsiam"])
def test_pretrain_on_cuda_in_bf16_keeps_fp32_weights_and_a_finite_loss(tmp_path, base):
    spec = load_spec("default", [*TINY, f"method.name={base}", "train.epochs=2"])
    last = load_file(pretrain(spec, tmp_path / "run", show_progress=False))
    assert {v.dtype for k, v in last.items() if k.startswith("model.") and v.is_floating_point()} == {torch.float32}
    epochs = [r for r in runs.read_metrics(tmp_path / "run") if r["kind"] == "epoch"]
    assert len(epochs) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in epochs)


def test_channels_last_bf16_encoder_matches_fp32_contiguous():
    torch.manual_seed(0)
    backbone = build_backbone(BackboneSpec(width=16, cifar_stem=True), 32).to(CUDA).eval()
    x = torch.rand(32, 3, 32, 32, device=CUDA)
    with torch.no_grad():
        ref = backbone(x)
        policy = precision.resolve("bf16", "channels_last", CUDA)
        backbone = backbone.to(memory_format=policy.memory_format)
        with policy.autocast():
            got = backbone(x.contiguous(memory_format=torch.channels_last)).float()
    assert backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(got, ref, rtol=0.05, atol=0.05 * ref.abs().max().item())


def test_fused_adam_equals_the_reference_adam():
    torch.manual_seed(0)
    params = [torch.randn(64, 32, device=CUDA, requires_grad=True) for _ in range(3)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    spec = OptimSpec(lr=1e-2, weight_decay=1e-4)
    fused, plain = build_optimizer(params, spec, fused=True), build_optimizer(twins, spec, fused=False)
    assert fused.defaults["fused"]
    for _ in range(5):
        for ps, opt in ((params, fused), (twins, plain)):
            opt.zero_grad()
            sum((p**2).sum() for p in ps).backward()
            opt.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params, twins, strict=True))


def test_views_and_warp_run_on_the_device_and_match_the_cpu_ops():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    v1, v2 = augment.views(x.to(CUDA), AugmentSpec(), generator(0, "views", 0, CUDA))
    assert v1.device.type == v2.device.type == "cuda" and v1.dtype == torch.float32
    spec = AffineSpec()
    phi = affine.sample(16, spec, 32, torch.Generator().manual_seed(0))  # (16, 6)
    xf = x.float() / 255
    cpu, gpu = affine.warp(xf, phi, spec), affine.warp(xf.to(CUDA), phi.to(CUDA), spec).cpu()
    assert (cpu != gpu).float().mean() < 1e-3  # nearest: a rare pixel centre can round the other way


def test_affine_block_on_cuda_without_a_generator():
    torch.manual_seed(0)
    encoder = build_backbone(BackboneSpec(width=8, cifar_stem=True), 16).to(CUDA)
    block = AffineEstimation(encoder.feat_dim).to(CUDA)
    view = torch.rand(8, 3, 16, 16, device=CUDA)
    with precision.resolve("auto", "auto", CUDA).autocast():
        loss = block(encoder, view, encoder(view))
    assert loss.dtype == torch.float32 and loss.device.type == "cuda" and torch.isfinite(loss)
    loss.backward()
    assert encoder.conv1.weight.grad is not None


def test_every_objective_trains_on_cuda_in_bf16_and_view_params_stay_on_the_device(tmp_path):
    spec = load_spec("default", [*TINY, "train.epochs=1", "rotation.head_hidden=64",
                                 *(f"{name}.enabled=true" for name in ("augself", "rotation", "care"))])  # fmt: skip
    last = load_file(pretrain(spec, tmp_path / "run", show_progress=False))
    assert any(k.startswith("model.objectives.rotation.") for k in last)
    epoch = [r for r in runs.read_metrics(tmp_path / "run") if r["kind"] == "epoch"][-1]
    assert all(torch.isfinite(torch.tensor(epoch[f"loss_{n}"])) for n in ("affine", "augself", "rotation", "care"))
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    v1, _, p1, _ = augment.views_with_params(x.to(CUDA), AugmentSpec(), generator(0, "views", 0, CUDA))
    assert p1.box_px.device.type == "cuda" and p1.box_frac.shape == (16, 4)
    assert torch.equal(v1, augment.views(x.to(CUDA), AugmentSpec(), generator(0, "views", 0, CUDA))[0])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm over NCCL needs 2 GPUs")
def test_torchrun_on_two_gpus_uses_syncbatchnorm(tmp_path):
    run = tmp_path / "ddp"
    args = ["--no-progress", "--out", str(run), "--epochs", "1"] + [a for o in TINY for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "affssl", "pretrain", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / runs.LAST).is_file()
    assert json.loads((run / runs.SPEC).read_text())["train"]["sync_bn"] is True
    assert Path(run / runs.METRICS).read_text().count('"kind": "epoch"') == 1
