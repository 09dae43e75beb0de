"""Base methods: each loss against a naive reference, the registry against the spec union."""

import math
import typing

import pytest
import torch
import torch.nn.functional as F

from affssl.backbones import build_backbone
from affssl.methods import METHODS, build_method
from affssl.methods.barlow import barlow_loss
from affssl.methods.byol import byol_loss, ema_tau
from affssl.methods.simclr import nt_xent
from affssl.spec import METHOD_SPECS, BackboneSpec, BarlowSpec, BYOLSpec, MethodSpec, SimCLRSpec


def naive_nt_xent(z1, z2, temperature):
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = {j: float(z[i] @ z[j]) / temperature for j in range(2 * n) if j != i}
        total += -sims[positive] + math.log(sum(math.exp(s) for s in sims.values()))
    return total / (2 * n)


def naive_barlow(z1, z2, lam):
    n, d = z1.shape
    a = [[(z1[k, i] - z1[:, i].mean()) / z1[:, i].std() for i in range(d)] for k in range(n)]
    b = [[(z2[k, i] - z2[:, i].mean()) / z2[:, i].std() for i in range(d)] for k in range(n)]
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(float(a[k][i] * b[k][j]) for k in range(n)) / n
            total += (1 - c) ** 2 if i == j else lam * c**2
    return total


def naive_byol(p1, p2, t1, t2):
    cos = lambda u, v: float(u @ v) / (float(u.norm()) * float(v.norm()))  # noqa: E731
    n = len(p1)
    return sum(2 - 2 * cos(p1[k], t2[k]) for k in range(n)) / n + sum(2 - 2 * cos(p2[k], t1[k]) for k in range(n)) / n


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_equals_naive(temperature):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(naive_nt_xent(z1, z2, temperature), abs=1e-5)


@pytest.mark.parametrize("lam", [5e-3, 0.5])
def test_barlow_equals_naive(lam):
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 4, generator=g, dtype=torch.float64)
    assert barlow_loss(z1, z2, lam).item() == pytest.approx(naive_barlow(z1, z2, lam), abs=1e-5)


def test_byol_equals_naive():
    g = torch.Generator().manual_seed(2)
    p1, p2, t1, t2 = (torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(4))
    assert byol_loss(p1, p2, t1, t2).item() == pytest.approx(naive_byol(p1, p2, t1, t2), abs=1e-5)


def test_byol_targets_get_no_gradient():
    p1, p2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    t1, t2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    byol_loss(p1, p2, t1, t2).backward()
    assert t1.grad is None and t2.grad is None and p1.grad is not None


def test_ema_tau_schedule():
    assert ema_tau(0.996, 0.0) == pytest.approx(0.996)
    assert ema_tau(0.996, 1.0) == pytest.approx(1.0)
    assert ema_tau(0.996, 0.5) == pytest.approx(0.998)


@pytest.mark.parametrize("loss", ["simclr", "barlow", "byol"])
def test_loss_decreases_on_free_embeddings(loss):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(32, 8, generator=g)
    z1 = (base + 0.5 * torch.randn(32, 8, generator=g)).requires_grad_()
    z2 = (base + 0.5 * torch.randn(32, 8, generator=g)).requires_grad_()
    fn = {
        "simclr": lambda: nt_xent(z1, z2, 0.5),
        "barlow": lambda: barlow_loss(z1, z2, 5e-3),
        "byol": lambda: byol_loss(z1, z2, base, base),
    }[loss]
    opt = torch.optim.SGD([z1, z2], lr=0.1)
    first = fn().item()
    for _ in range(50):
        opt.zero_grad()
        fn().backward()
        opt.step()
    assert fn().item() < first


def test_registry_matches_spec_union():
    union = typing.get_args(typing.get_args(MethodSpec)[0])
    names = {typing.get_args(cls.model_fields["name"].annotation)[0] for cls in union}
    assert names == set(METHODS) == set(METHOD_SPECS)


@pytest.mark.parametrize("spec", [SimCLRSpec(), BYOLSpec(), BarlowSpec()], ids=lambda s: s.name)
def test_method_step_shapes_and_state_has_no_shared_tensors(spec):
    backbone = build_backbone(BackboneSpec(width=4, cifar_stem=True))
    method = build_method(spec, backbone, backbone.feat_dim)
    v1, v2 = torch.rand(6, 3, 16, 16), torch.rand(6, 3, 16, 16)
    out = method(backbone(v1), backbone(v2), v1, v2)
    assert out.loss.dim() == 0 and out.z1.shape == (6, spec.proj_out) == out.z2.shape
    out.loss.backward()
    pointers = [t.data_ptr() for t in method.state_dict().values()] + [
        t.data_ptr() for t in backbone.state_dict().values()
    ]
    assert len(pointers) == len(set(pointers))


def test_byol_ema_moves_target_towards_online():
    backbone = build_backbone(BackboneSpec(width=4, cifar_stem=True))
    method = build_method(BYOLSpec(tau_base=0.5), backbone, backbone.feat_dim)
    online = backbone.conv1.weight
    with torch.no_grad():
        online.add_(1.0)
    before = method.target_backbone.conv1.weight.clone()
    method.after_step(backbone, progress=0.0)  # τ = 0.5: halfway
    torch.testing.assert_close(method.target_backbone.conv1.weight, 0.5 * before + 0.5 * online)
