"""Base methods: each loss against a naive reference, the registry against the spec union."""

import math
import typing

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from affssl.backbones import build_backbone
from affssl.methods import METHODS, build_method
from affssl.methods.barlow import barlow_loss
from affssl.methods.byol import byol_loss, ema_tau
from affssl.methods.mocov3 import info_nce, mocov3_loss
from affssl.methods.simclr import nt_xent
from affssl.methods.simsiam import simsiam_loss
from affssl.methods.vicreg import vicreg_loss
from affssl.spec import (
    METHOD_SPECS,
    BackboneSpec,
    BarlowSpec,
    BYOLSpec,
    DINOSpec,
    MethodSpec,
    MoCoV3Spec,
    SimCLRSpec,
    SimSiamSpec,
    VICRegSpec,
)


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


def naive_vicreg(z1, z2, lam, mu, nu):
    """Bardes et al. 2022, Algorithm 1, written out per element (variance: the official code's view mean)."""
    n, d = z1.shape
    invariance = sum(float(z1[k, j] - z2[k, j]) ** 2 for k in range(n) for j in range(d)) / (n * d)

    def variance(z):
        hinge = 0.0
        for j in range(d):
            mean_j = sum(float(z[k, j]) for k in range(n)) / n
            var_j = sum((float(z[k, j]) - mean_j) ** 2 for k in range(n)) / (n - 1)
            hinge += max(0.0, 1 - math.sqrt(var_j + 1e-4))
        return hinge / d

    def covariance(z):
        means = [sum(float(z[k, j]) for k in range(n)) / n for j in range(d)]
        total = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    c = sum((float(z[k, i]) - means[i]) * (float(z[k, j]) - means[j]) for k in range(n)) / (n - 1)
                    total += c**2
        return total / d

    return lam * invariance + mu * (variance(z1) + variance(z2)) / 2 + nu * (covariance(z1) + covariance(z2))


def naive_mocov3(q1, q2, k1, k2, tau):
    """Chen et al. 2021, Algorithm 1: ctr(q1, k2) + ctr(q2, k1), ctr = 2τ · CE(q·k/τ, positives on the diagonal)."""

    def ctr(q, k):
        q = [v / float(v.norm()) for v in q]
        k = [v / float(v.norm()) for v in k]
        total = 0.0
        for i in range(len(q)):
            logits = [float(q[i] @ k[j]) / tau for j in range(len(k))]
            total += -logits[i] + math.log(sum(math.exp(x) for x in logits))
        return 2 * tau * total / len(q)

    return ctr(q1, k2) + ctr(q2, k1)


def naive_simsiam(p1, p2, z1, z2):
    """Chen & He 2021, Algorithm 1: L = D(p1, z2)/2 + D(p2, z1)/2, D = −mean cosine."""
    cos = lambda u, v: float(u @ v) / (float(u.norm()) * float(v.norm()))  # noqa: E731
    n = len(p1)
    return -sum(cos(p1[k], z2[k]) for k in range(n)) / n / 2 - sum(cos(p2[k], z1[k]) for k in range(n)) / n / 2


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


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 3.0, 0.5)])
def test_vicreg_equals_naive(weights):
    g = torch.Generator().manual_seed(4)
    # small spread so some dimensions sit below the std target of 1 and the hinge is active
    z1 = 0.8 * torch.randn(9, 5, generator=g, dtype=torch.float64)
    z2 = z1 + 0.6 * torch.randn(9, 5, generator=g, dtype=torch.float64)
    assert vicreg_loss(z1, z2, *weights).item() == pytest.approx(naive_vicreg(z1, z2, *weights), abs=1e-6)


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_mocov3_equals_naive(temperature):
    g = torch.Generator().manual_seed(5)
    q1, q2, k1, k2 = (torch.randn(7, 4, generator=g, dtype=torch.float64) for _ in range(4))
    expected = naive_mocov3(q1, q2, k1, k2, temperature)
    assert mocov3_loss(q1, q2, k1, k2, temperature).item() == pytest.approx(expected, abs=1e-6)


def test_mocov3_offset_picks_the_positives_in_the_global_keys():
    """A process's queries (rows 3..5 of the global batch) against all keys: labels offset by 3."""
    g = torch.Generator().manual_seed(6)
    q, k = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 4, generator=g, dtype=torch.float64)
    part = info_nce(q[3:6], k, 0.2, offset=3)
    rows = F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.2, torch.arange(8), reduction="none")
    assert part.item() == pytest.approx(0.4 * rows[3:6].mean().item(), abs=1e-12)


def test_simsiam_equals_naive():
    g = torch.Generator().manual_seed(7)
    p1, p2, z1, z2 = (torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(4))
    assert simsiam_loss(p1, p2, z1, z2).item() == pytest.approx(naive_simsiam(p1, p2, z1, z2), abs=1e-6)


@pytest.mark.parametrize("loss", ["mocov3", "simsiam"])
def test_keys_and_targets_get_no_gradient(loss):
    p1, p2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    t1, t2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    (mocov3_loss(p1, p2, t1, t2, 0.2) if loss == "mocov3" else simsiam_loss(p1, p2, t1, t2)).backward()
    assert t1.grad is None and t2.grad is None and p1.grad is not None


def test_byol_targets_get_no_gradient():
    p1, p2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    t1, t2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    byol_loss(p1, p2, t1, t2).backward()
    assert t1.grad is None and t2.grad is None and p1.grad is not None


def test_ema_tau_schedule():
    assert ema_tau(0.996, 0.0) == pytest.approx(0.996)
    assert ema_tau(0.996, 1.0) == pytest.approx(1.0)
    assert ema_tau(0.996, 0.5) == pytest.approx(0.998)


@pytest.mark.parametrize("loss", ["simclr", "barlow", "byol", "vicreg", "mocov3", "simsiam"])
def test_loss_decreases_on_free_embeddings(loss):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(32, 8, generator=g)
    z1 = (base + 0.5 * torch.randn(32, 8, generator=g)).requires_grad_()
    z2 = (base + 0.5 * torch.randn(32, 8, generator=g)).requires_grad_()
    fn = {
        "simclr": lambda: nt_xent(z1, z2, 0.5),
        "barlow": lambda: barlow_loss(z1, z2, 5e-3),
        "byol": lambda: byol_loss(z1, z2, base, base),
        "vicreg": lambda: vicreg_loss(z1, z2, 25.0, 25.0, 1.0),
        "mocov3": lambda: mocov3_loss(z1, z2, base, base, 0.2),
        "simsiam": lambda: simsiam_loss(z1, z2, base, base),
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


SPECS = [SimCLRSpec(), BYOLSpec(), BarlowSpec(), VICRegSpec(), MoCoV3Spec(), SimSiamSpec(), DINOSpec(prototypes=64)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
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


def test_mocov3_momentum_encoder_follows_the_cosine_schedule():
    backbone = build_backbone(BackboneSpec(width=4, cifar_stem=True))
    method = build_method(MoCoV3Spec(momentum_base=0.9), backbone, backbone.feat_dim)
    assert not any(p.requires_grad for p in method.momentum_backbone.parameters())
    with torch.no_grad():
        backbone.conv1.weight.add_(1.0)
        method.projector[0].weight.add_(1.0)
    before = method.momentum_backbone.conv1.weight.clone(), method.momentum_projector[0].weight.clone()
    method.after_step(backbone, progress=0.5)  # m = 1 − 0.1 · (cos(π/2) + 1)/2 = 0.95
    torch.testing.assert_close(method.momentum_backbone.conv1.weight, 0.95 * before[0] + 0.05 * backbone.conv1.weight)
    torch.testing.assert_close(
        method.momentum_projector[0].weight, 0.95 * before[1] + 0.05 * method.projector[0].weight
    )


def test_heads_follow_the_papers():
    """SimSiam: 3-layer projector ending in an affine-free BN; MoCo v3: 2-layer; VICReg: 3-layer, no output BN."""
    feat = 16
    simsiam = build_method(SimSiamSpec(proj_hidden=12, proj_out=10, pred_hidden=3), nn.Identity(), feat)
    layers = [type(m).__name__ for m in simsiam.projector]
    assert layers == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert not simsiam.projector[-1].affine and simsiam.projector[-2].bias is None
    assert [m.weight.shape for m in simsiam.predictor if isinstance(m, nn.Linear)] == [(3, 10), (10, 3)]
    assert simsiam.predictor[-1].bias is not None
    moco = build_method(MoCoV3Spec(proj_hidden=12, proj_out=10, pred_hidden=8), nn.Identity(), feat)
    assert [type(m).__name__ for m in moco.projector] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert not moco.projector[-1].affine and isinstance(moco.predictor[-1], nn.Linear)
    vicreg = build_method(VICRegSpec(proj_hidden=12, proj_out=10), nn.Identity(), feat)
    assert [m.weight.shape for m in vicreg.projector if isinstance(m, nn.Linear)] == [(12, 16), (12, 12), (10, 12)]
    assert isinstance(vicreg.projector[-1], nn.Linear)
