"""Oracles for the auxiliary objectives (affssl.objectives): AugSelf's targets against torchvision's samplers
replaying the same draws, E-SSL's turns against torch.rot90, CARE's loss against a double loop over pairs, each
head's layers and parameter count as its paper states them, and hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.transforms as tv
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from affssl import CARE, AugSelf, RotationPrediction, augment
from affssl.learner import Learner
from affssl.objectives import OBJECTIVES
from affssl.objectives.augself import augself_targets
from affssl.objectives.care import care_loss, chunk_of, shared_views
from affssl.objectives.rotation import rotations, small_views
from affssl.spec import AUX, DEFAULT_OBJECTIVE_WEIGHT, METHOD_SPECS, AugmentSpec, RotationSpec, RunSpec, load_spec

TINY = ["backbone.width=4", "data.image_size_px=16", "rotation.head_hidden=32", "augself.head_hidden=16"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Registry and spec


def test_the_registry_and_the_spec_sections_name_the_same_objectives():
    assert tuple(OBJECTIVES) == AUX == ("affine", "augself", "rotation", "care")
    assert all(name in RunSpec.model_fields for name in AUX)
    for table in DEFAULT_OBJECTIVE_WEIGHT.values():
        assert set(table) == set(METHOD_SPECS)
    spec = load_spec("default", ["method.name=barlow"])
    assert (spec.augself.weight, spec.rotation.weight, spec.care.weight) == (10.0, 8.0, 0.3)
    published = {"simclr": 0.4, "simsiam": 0.08, "barlow": 8.0}
    assert {b: DEFAULT_OBJECTIVE_WEIGHT["rotation"][b] for b in published} == published
    assert DEFAULT_OBJECTIVE_WEIGHT["care"]["simclr"] == 0.03 and DEFAULT_OBJECTIVE_WEIGHT["augself"]["simclr"] == 1.0
    assert not any(getattr(load_spec("default"), name).enabled for name in AUX[1:])  # the default run is as before


# ---------------------------------------------------------------------------------------------
# AugSelf: Δ from torchvision's samplers, replaying the pipeline's own random numbers


class Replay:
    """Stands in for `torch` inside torchvision.transforms.transforms: each uniform_, randint and randperm returns
    the pipeline's next raw draw for one sample, so torchvision's get_params makes its choices from them."""

    def __init__(self, uniforms: list[float], offsets: list[float], order: torch.Tensor | None = None):
        self.uniforms, self.offsets, self.order = list(uniforms), list(offsets), order

    def __getattr__(self, name):
        return getattr(torch, name)

    def empty(self, *size):
        replay = self

        class Draw:
            def uniform_(self, lo, hi):
                return float(lo) + (float(hi) - float(lo)) * torch.tensor([replay.uniforms.pop(0)])  # float32

        return Draw()

    def randint(self, low, high, size):
        return torch.tensor([math.floor(self.offsets.pop(0) * (high - low)) + low])  # u ∈ [0, 1) → an integer

    def randperm(self, n):
        return self.order


def reference_states(x_hw: tuple[int, int], spec: AugmentSpec, gen: torch.Generator, n: int, monkeypatch) -> list:
    """Per view and sample: (i, j, h, w, flip, jitter applied, (b, c, s, hue)) from torchvision's get_params fed the
    raw numbers in the order the batched pipeline draws them (affssl.augment.crop_view_params)."""
    H, W = x_hw
    out = []
    for _view in range(2):
        area, log_aspect, offset = (torch.rand(s, generator=gen) for s in ((n, 10), (n, 10), (n, 2)))
        flip = torch.rand(n, generator=gen) < spec.flip_p
        apply = torch.rand(n, generator=gen) < spec.jitter_p
        factor_u = torch.stack([torch.rand(n, generator=gen) for _ in range(4)], 1)  # (n, 4)
        order = torch.rand(n, 4, generator=gen).argsort(1)
        for _ in range(4):  # grayscale, σ, blur, solarize: drawn whatever their p
            torch.rand(n, generator=gen)
        view = []
        for i in range(n):
            uniforms = [u for a in range(10) for u in (area[i, a].item(), log_aspect[i, a].item())]
            monkeypatch.setattr(tv, "torch", Replay(uniforms, offset[i].tolist()))
            box = tv.RandomResizedCrop.get_params(torch.zeros(3, H, W), list(spec.crop_scale), list(spec.crop_ratio))
            jitter = tv.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)
            monkeypatch.setattr(tv, "torch", Replay(factor_u[i].tolist(), [], order[i]))
            fn_idx, *factors = tv.ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation,
                                                         jitter.hue)  # fmt: skip
            assert torch.equal(fn_idx, order[i])
            view.append((*box, bool(flip[i]), bool(apply[i]), factors))
        out.append(view)
    monkeypatch.undo()
    return out


def naive_delta(a: tuple, b: tuple, spec: AugmentSpec, H: int, W: int) -> list[float]:
    """AugSelf's targets for one pair of views, written from the paper: crop then colour, view 1 minus view 2."""

    def crop(v):
        i, j, h, w, flip = v[:5]
        cx = (j + w / 2) / W
        return [(i + h / 2) / H, 1 - cx if flip else cx, h / H, w / W]

    def colour(v):
        applied, (b, c, s, hue) = v[5], v[6]
        if not applied:
            return [0.0] * 4
        return [(b - 1) / spec.brightness, (c - 1) / spec.contrast, (s - 1) / spec.saturation, hue / spec.hue]

    return [p - q for p, q in zip(crop(a) + colour(a), crop(b) + colour(b), strict=True)]


def test_augself_targets_match_torchvision_get_params_on_the_same_draws(monkeypatch):
    spec = AugmentSpec(jitter_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)  # AugSelf's own
    n, H, W = 24, 24, 32
    x = torch.randint(0, 256, (n, 3, H, W), generator=_gen(1), dtype=torch.uint8)
    _, _, p1, p2 = augment.views_with_params(x, spec, _gen(9))
    got = augself_targets(p1, p2, spec)
    ref1, ref2 = reference_states((H, W), spec, _gen(9), n, monkeypatch)
    assert [list(r[:4]) for r in ref1] == p1.box_px.tolist() and [r[4] for r in ref2] == p2.flip.tolist()
    assert p1.flip.any() and not p1.flip.all() and p2.jitter.any() and not p2.jitter.all()
    want = torch.tensor([naive_delta(a, b, spec, H, W) for a, b in zip(ref1, ref2, strict=True)])  # (n, 8)
    torch.testing.assert_close(torch.cat([got["crop"], got["colour"]], 1), want.float(), atol=1e-6, rtol=0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 9), jitter_p=st.sampled_from([0.0, 0.5, 1.0]))
def test_augself_targets_are_antisymmetric_and_bounded(seed, n, jitter_p):
    spec = AugmentSpec(jitter_p=jitter_p)
    x = torch.randint(0, 256, (n, 3, 16, 20), generator=_gen(seed), dtype=torch.uint8)
    _, _, p1, p2 = augment.views_with_params(x, spec, _gen(seed + 1))
    forward, backward = augself_targets(p1, p2, spec), augself_targets(p2, p1, spec)
    for name in ("crop", "colour"):
        assert torch.equal(forward[name], -backward[name]) and (forward[name].abs() <= 2).all()
        assert not augself_targets(p1, p1, spec)[name].any()  # a view against itself: no difference
    if jitter_p == 0:
        assert not forward["colour"].any()


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_augself_heads_layers_and_parameter_count():
    d = 512
    block = AugSelf(feat_dim=d)
    for name in ("crop", "colour"):
        layers = list(getattr(block, name))
        kinds = [type(m) for m in layers]
        assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
        assert (layers[0].in_features, layers[0].out_features, layers[0].bias) == (2 * d, 512, None)
        assert (layers[3].in_features, layers[3].out_features, layers[3].bias) == (512, 512, None)
        assert (layers[6].in_features, layers[6].out_features) == (512, 4) and layers[6].bias is not None
        assert _count(getattr(block, name)) == 2 * d * 512 + 2 * 512 + 512 * 512 + 2 * 512 + 512 * 4 + 4
    assert _count(block) == 2 * (2 * d * 512 + 512 * 512 + 4 * 512 + 512 * 4 + 4)


def test_augself_loss_is_the_symmetrised_mse_of_tanh_per_type():
    torch.manual_seed(0)
    block = AugSelf(feat_dim=6, spec=load_spec("default", ["augself.head_hidden=8", "augself.colour_weight=0.5"])
                    .augself)  # fmt: skip
    h1, h2 = torch.randn(5, 6), torch.randn(5, 6)
    targets = {"crop": torch.rand(5, 4) - 0.5, "colour": torch.rand(5, 4) - 0.5}
    want = 0.0
    for name, w in (("crop", 1.0), ("colour", 0.5)):
        head = getattr(block, name)
        pred = head(torch.cat([torch.cat([h1, h2], 1), torch.cat([h2, h1], 1)]))  # one batch: BN sees both orders
        rows = [(torch.tanh(pred[i]) - t).square().mean() for i, t in enumerate([*targets[name], *-targets[name]])]
        want = want + w * torch.stack(rows).mean()
    torch.testing.assert_close(block(h1, h2, targets), want)


# ---------------------------------------------------------------------------------------------
# Rotation prediction (E-SSL)


def test_rotations_are_torch_rot90_per_image():
    x = torch.rand(3, 2, 5, 5, generator=_gen())
    turned, labels = rotations(x)
    assert turned.shape == (12, 2, 5, 5) and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for k in range(4):
        for i in range(3):
            assert torch.equal(turned[k * 3 + i], torch.rot90(x[i], k, dims=(1, 2)))


def test_rotation_head_layers_and_parameter_count_and_loss():
    d = 512
    block = RotationPrediction(feat_dim=d)
    kinds = [type(m) for m in block.children()]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]
    assert _count(block) == (d * 2048 + 2048) + 2 * 2048 + (2048 * 2048 + 2048) + 2 * 2048 + (2048 * 4 + 4)
    small = RotationPrediction(feat_dim=12, spec=RotationSpec(head_hidden=8))
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 12))
    views = torch.rand(5, 3, 4, 4, generator=_gen(2))
    turned = torch.cat([torch.rot90(views, k, dims=(2, 3)) for k in range(4)])
    logits = small.predict(encoder(turned))
    want = -torch.stack([F.log_softmax(logits[r], 0)[r // 5] for r in range(20)]).mean()
    torch.testing.assert_close(small(encoder, views), want)


def test_small_views_are_half_size_from_their_own_stream():
    spec = load_spec("default", ["data.image_size_px=32"])
    x = torch.randint(0, 256, (4, 3, 32, 32), generator=_gen(), dtype=torch.uint8)
    views = small_views(x, spec.rotation, spec.augment, _gen(3), 32)
    assert views.shape == (4, 3, 16, 16) and views.min() >= 0 and views.max() <= 1
    assert torch.equal(views, small_views(x, spec.rotation, spec.augment, _gen(3), 32))


# ---------------------------------------------------------------------------------------------
# CARE


def naive_care(z1: torch.Tensor, z2: torch.Tensor, chunks: int) -> float:
    """The loss from its definition: per chunk, 2 · mean over rows i of Σ_{j ≠ i} (<a_i, a_j> − <b_i, b_j>)²."""
    B = z1.shape[0]
    k = min(chunks, B)
    members = [[i for i in range(B) if i * k // B == c] for c in range(k)]
    a, b = F.normalize(z1, dim=1).tolist(), F.normalize(z2, dim=1).tolist()
    dot = lambda u, v: sum(p * q for p, q in zip(u, v, strict=True))  # noqa: E731
    per_chunk = []
    for rows in members:
        sq = [sum((dot(a[i], a[j]) - dot(b[i], b[j])) ** 2 for j in rows if j != i) for i in rows]
        per_chunk.append(2 * sum(sq) / len(rows))
    return sum(per_chunk) / len(per_chunk)


@pytest.mark.parametrize(("B", "chunks"), [(16, 4), (10, 4), (7, 16), (9, 1)])
def test_care_loss_matches_a_double_loop_over_pairs(B, chunks):
    z1, z2 = torch.randn(B, 5, generator=_gen(B)), torch.randn(B, 5, generator=_gen(B + 1))
    assert math.isclose(care_loss(z1, z2, chunks).item(), naive_care(z1, z2, chunks), rel_tol=1e-5, abs_tol=1e-7)
    sizes = torch.bincount(chunk_of(B, chunks))
    assert len(sizes) == min(B, chunks) and sizes.max() - sizes.min() <= 1  # B not divisible: sizes differ by one


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(2, 24), D=st.integers(2, 8), chunks=st.integers(1, 8))
def test_care_loss_is_zero_for_an_orthogonal_map_and_not_for_another(seed, B, D, chunks):
    g = _gen(seed)
    z1 = torch.randn(B, D, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))  # orthogonal (D, D)
    scale = torch.rand(B, 1, generator=g, dtype=torch.float64) + 0.5  # lengths do not count: normalised first
    assert care_loss(z1, scale * z1 @ q, chunks).item() < 1e-20
    assert CARE()(z1, z1 @ q).item() < 1e-20 and len(CARE().state_dict()) == 0
    if B // min(chunks, B) >= 2:  # every chunk holds a pair: a generic linear map changes some angle
        assert care_loss(z1, z1 @ torch.randn(D, D, generator=g, dtype=torch.float64), chunks).item() > 1e-12


def test_care_views_share_one_draw_per_chunk():
    image = torch.randint(0, 256, (1, 3, 16, 16), generator=_gen(), dtype=torch.uint8)
    x = image.expand(6, 3, 16, 16)  # six copies: within a chunk the views must then be equal
    v1, v2 = shared_views(x, AugmentSpec(), 3, _gen(4), 16)  # chunks {0, 1}, {2, 3}, {4, 5}
    for v in (v1, v2):
        assert torch.equal(v[0], v[1]) and torch.equal(v[2], v[3]) and torch.equal(v[4], v[5])
        assert not torch.equal(v[0], v[2]) and not torch.equal(v[2], v[4])
    assert not torch.equal(v1, v2)


# ---------------------------------------------------------------------------------------------
# In the learner


def test_each_objective_is_a_named_loss_part_and_leaves_the_base_views_alone():
    x = torch.randint(0, 256, (8, 3, 16, 16), generator=_gen(), dtype=torch.uint8)
    streams = lambda: {n: _gen(10 + i) for i, n in enumerate(("affine", "rotation", "care"))}  # noqa: E731
    torch.manual_seed(0)
    plain = Learner(load_spec("default", [*TINY, "affine.enabled=false"]))
    g_plain = _gen(1)
    _, base = plain(x, g_plain, streams())
    for name in AUX:
        torch.manual_seed(0)
        learner = Learner(load_spec("default", [*TINY, "affine.enabled=false", f"{name}.enabled=true"]))
        g_views = _gen(1)
        _, parts = learner(x, g_views, streams())
        assert set(parts) == {"loss_ssl", f"loss_{name}", "loss"}
        assert torch.equal(parts["loss_ssl"], base["loss_ssl"])  # the same views, features and base loss
        assert torch.equal(g_views.get_state(), g_plain.get_state())  # no draw of the views moved
        weight = getattr(learner.spec, name).weight
        torch.testing.assert_close(parts["loss"], parts["loss_ssl"] + weight * parts[f"loss_{name}"])
        assert torch.equal(learner.state_dict()["backbone.conv1.weight"], plain.state_dict()["backbone.conv1.weight"])
    everything = Learner(load_spec("default", [*TINY, *(f"{n}.enabled=true" for n in AUX)]))
    keys = everything.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"backbone", "method", "head", "objectives"}
    assert {k.split(".")[1] for k in keys if k.startswith("objectives.")} == {"augself", "rotation"}
    counts = everything.param_counts()
    assert counts["objectives"] == _count(everything.objectives) > 0
    assert counts["total"] == sum(p.numel() for p in everything.parameters() if p.requires_grad)
    names = {n for g in everything.optim_groups() for n, p in everything.named_parameters() if any(
        p is q for q in g["params"])}  # fmt: skip
    assert any(n.startswith("objectives.rotation.") for n in names)  # optimised


def test_every_objective_trains_on_whole_images_of_several_sizes():
    """The chunks storage: views, small views and shared draws cropped from each zero-padded whole image."""
    from affssl.data import crops

    images = [torch.randint(0, 256, (3, h, w), generator=_gen(h), dtype=torch.uint8) for h, w in
              [(20, 28), (24, 16), (16, 16), (30, 22)] * 2]  # fmt: skip
    x, sizes = crops.pad(images)  # (8, 3, 30, 28), (8, 2)
    torch.manual_seed(0)
    learner = Learner(load_spec("default", [*TINY, *(f"{n}.enabled=true" for n in AUX), "care.chunks=2"]))
    loss, parts = learner(x, _gen(1), {n: _gen(i) for i, n in enumerate(("affine", "rotation", "care"))}, sizes)
    assert set(parts) == {"loss", "loss_ssl", *(f"loss_{n}" for n in AUX)}
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in parts.values())
    loss.backward()
    assert all(p.grad is not None for p in learner.objectives.parameters())
