"""DINO: the loss and the centre update against naive float64 references, the schedules, the head, the frozen
prototypes, safetensors round trip of the weight-normalised layer, and exact resume with local views."""

from __future__ import annotations

import math
import signal

import pytest
import torch
from conftest import signal_at
from safetensors.torch import load_file, save_file
from torch import nn

from affssl import faults, runs
from affssl.backbones import build_backbone
from affssl.engine import pretrain
from affssl.learner import Learner
from affssl.methods import build_method
from affssl.methods.dino import dino_loss, teacher_temp_at, updated_center
from affssl.spec import BackboneSpec, DINOSpec, load_spec

TINY = ["method.name=dino", "backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "data.limit=256",
        "train.epochs=2", "train.log_every=1", "method.proj_hidden=32", "method.proj_out=16", "method.prototypes=64",
        "affine.head_hidden=32", "augment.local_crops=2", "method.teacher_temp_warmup_epochs=2"]  # fmt: skip


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_dino(student, teacher, center, student_temp, teacher_temp) -> float:
    V, N, K = student.shape

    def softmax(row, temp):
        m = max(float(v) for v in row)
        e = [math.exp((float(v) - m) / temp) for v in row]
        return [v / sum(e) for v in e]

    total, pairs = 0.0, 0
    for i in range(2):
        for j in range(V):
            if j == i:
                continue
            ce = 0.0
            for n in range(N):
                q = softmax([teacher[i, n, k] - center[0, k] for k in range(K)], teacher_temp)
                p = softmax(student[j, n], student_temp)
                ce += -sum(q[k] * math.log(p[k]) for k in range(K))
            total, pairs = total + ce / N, pairs + 1
    return total / pairs


@pytest.mark.parametrize(("crops", "teacher_temp"), [(2, 0.04), (5, 0.07)])
def test_dino_loss_equals_naive(crops, teacher_temp):
    student = torch.randn(crops, 6, 7, generator=_gen(1), dtype=torch.float64)
    teacher = torch.randn(2, 6, 7, generator=_gen(2), dtype=torch.float64)
    center = torch.randn(1, 7, generator=_gen(3), dtype=torch.float64)
    got = dino_loss(student, teacher, center, 0.1, teacher_temp).item()
    assert got == pytest.approx(naive_dino(student, teacher, center, 0.1, teacher_temp), rel=1e-9)


def test_dino_teacher_gets_no_gradient():
    student = torch.randn(3, 4, 5, generator=_gen(), requires_grad=True)
    teacher = torch.randn(2, 4, 5, generator=_gen(1), requires_grad=True)
    dino_loss(student, teacher, torch.zeros(1, 5), 0.1, 0.04).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_centre_update_equals_naive():
    center = torch.randn(1, 6, generator=_gen(), dtype=torch.float64)
    teacher = torch.randn(2, 5, 6, generator=_gen(1), dtype=torch.float64)  # (2 views, N, K)
    mean = [sum(float(teacher[v, n, k]) for v in range(2) for n in range(5)) / 10 for k in range(6)]
    want = [0.9 * float(center[0, k]) + 0.1 * mean[k] for k in range(6)]
    got = updated_center(center, teacher.mean((0, 1))[None], 0.9)
    assert got.shape == (1, 6) and got[0].tolist() == pytest.approx(want, rel=1e-12)


def test_teacher_temperature_warms_up_linearly_per_epoch():
    spec = DINOSpec(teacher_temp_start=0.04, teacher_temp=0.07, teacher_temp_warmup_epochs=4)
    assert [teacher_temp_at(e, spec) for e in range(6)] == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    assert teacher_temp_at(0, spec.model_copy(update={"teacher_temp_warmup_epochs": 0})) == 0.07
    assert teacher_temp_at(0, spec.model_copy(update={"teacher_temp_warmup_epochs": 1})) == 0.04


def tiny_dino(**fields) -> tuple[nn.Module, nn.Module]:
    backbone = build_backbone(BackboneSpec(width=4, cifar_stem=True))
    spec = DINOSpec(proj_hidden=12, proj_out=10, prototypes=20, **fields)
    return backbone, build_method(spec, backbone, backbone.feat_dim)


def test_head_follows_the_paper():
    _, dino = tiny_dino()
    assert [type(m).__name__ for m in dino.projector] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert [m.weight.shape for m in dino.projector if isinstance(m, nn.Linear)] == [(12, 32), (12, 12), (10, 12)]
    weight_g = dino.prototypes.parametrizations.weight.original0  # (K, 1), the prototypes' norms
    assert weight_g.shape == (20, 1) and not weight_g.requires_grad and torch.equal(weight_g, torch.ones(20, 1))
    torch.testing.assert_close(dino.prototypes.weight.norm(dim=1), torch.ones(20))
    assert dino.prototypes.bias is None
    _, bn = tiny_dino(head_bn=True, norm_last_layer=False)
    assert [type(m).__name__ for m in bn.projector][:3] == ["Linear", "BatchNorm1d", "GELU"]
    assert bn.prototypes.parametrizations.weight.original0.requires_grad
    assert not any(p.requires_grad for name, p in bn.named_parameters() if name.startswith("teacher_"))


def test_step_updates_the_centre_from_the_teacher_and_ema_moves_the_teacher():
    backbone, dino = tiny_dino(center_momentum=0.9, momentum_base=0.5)
    v1, v2 = torch.rand(6, 3, 16, 16, generator=_gen()), torch.rand(6, 3, 16, 16, generator=_gen(1))
    local = torch.rand(12, 3, 8, 8, generator=_gen(2))
    with torch.no_grad():
        teacher = torch.stack([dino._teacher(v1), dino._teacher(v2)])  # (2, 6, K)
    out = dino(backbone(v1), backbone(v2), v1, v2, backbone(local))
    assert out.loss.dim() == 0 and out.z1.shape == (6, 10)
    torch.testing.assert_close(dino.center, 0.1 * teacher.mean((0, 1))[None])
    out.loss.backward()
    with torch.no_grad():
        backbone.conv1.weight.add_(1.0)
    before = dino.teacher_backbone.conv1.weight.clone()
    dino.after_step(backbone, progress=0.0)  # τ = 0.5: halfway
    torch.testing.assert_close(dino.teacher_backbone.conv1.weight, 0.5 * before + 0.5 * backbone.conv1.weight)


def test_prototypes_get_no_update_in_the_frozen_epochs():
    backbone, dino = tiny_dino(freeze_last_layer_epochs=1)
    v = torch.rand(4, 3, 16, 16, generator=_gen())
    for epoch, frozen in ((0, True), (1, False)):
        dino.zero_grad(set_to_none=True)
        dino.start_epoch(epoch)
        dino(backbone(v), backbone(v.flip(-1)), v, v.flip(-1)).loss.backward()
        dino.before_update()
        assert (dino.prototypes.parametrizations.weight.original1.grad is None) == frozen
        assert dino.projector[0].weight.grad is not None


def test_weight_normalised_state_round_trips_through_safetensors(tmp_path):
    spec = load_spec("default", TINY)
    torch.manual_seed(0)
    learner = Learner(spec)
    with torch.no_grad():
        learner.method.center.normal_()  # state a fresh learner would not have
    state = learner.state_dict()
    keys = [k for k in state if "prototypes" in k or k == "method.center"]
    assert sorted(keys) == ["method.center", "method.prototypes.parametrizations.weight.original0",
                            "method.prototypes.parametrizations.weight.original1",
                            "method.teacher_prototypes.parametrizations.weight.original0",
                            "method.teacher_prototypes.parametrizations.weight.original1"]  # fmt: skip
    save_file(state, tmp_path / "w.safetensors")
    torch.manual_seed(1)
    other = Learner(spec)
    other.load_state_dict(load_file(tmp_path / "w.safetensors"), strict=True)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    z = torch.randn(3, 16)
    torch.testing.assert_close(other.method.prototypes(z), learner.method.prototypes(z), rtol=0, atol=0)


def test_frozen_epoch_keeps_the_prototypes_and_trains_the_rest(tmp_path):
    spec = load_spec("default", [*TINY, "train.epochs=2", "train.checkpoint_every=1", "optim.weight_decay=0.1"])
    torch.manual_seed(spec.train.seed)  # pretrain's initial weights
    start = Learner(spec).state_dict()
    pretrain(spec, tmp_path / "run", show_progress=False)
    first, last = load_file(runs.epoch_checkpoint(tmp_path / "run", 1)), load_file(tmp_path / "run" / runs.LAST)
    prototypes = "method.prototypes.parametrizations.weight.original1"
    assert torch.equal(first[f"model.{prototypes}"], start[prototypes])  # not even weight decay in epoch 1
    assert not torch.equal(last[f"model.{prototypes}"], start[prototypes])
    assert not torch.equal(first["model.method.projector.0.weight"], start["method.projector.0.weight"])
    assert first["model.method.center"].abs().sum() > 0
    epochs = [r for r in runs.read_metrics(tmp_path / "run") if r["kind"] == "epoch"]
    assert all(math.isfinite(r["loss"]) and r["loss_affine"] > 0 for r in epochs)


def test_signal_mid_epoch_then_resume_is_bit_identical(tmp_path, monkeypatch):
    """Centre, teacher, frozen-layer epoch and teacher temperature all come back exactly after a stop at step 5."""
    spec = load_spec("default", TINY)
    pretrain(spec, tmp_path / "reference", show_progress=False)
    signal_at(monkeypatch, signal.SIGTERM, 5)
    with pytest.raises(faults.Preempted):
        pretrain(spec, tmp_path / "run", show_progress=False)
    monkeypatch.undo()
    pretrain(spec, tmp_path / "run", resume=True, show_progress=False)
    a, b = load_file(tmp_path / "reference" / runs.LAST), load_file(tmp_path / "run" / runs.LAST)
    assert a.keys() == b.keys() and "model.method.center" in a
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
