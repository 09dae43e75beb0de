"""The affine module against torchvision and the paper's numbers (paper.md §1.3–1.6)."""

import itertools

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from affssl import affine
from affssl.spec import COMPONENTS, AffineSpec

SUBSETS = [(c,) for c in COMPONENTS] + [COMPONENTS]


def torchvision_warp(x, phi):
    """The reference: torchvision's affine per image, nearest, black fill."""
    return torch.stack([
        TF.affine(img, angle=float(p[0]), translate=[float(p[1]), float(p[2])], scale=float(p[3]),
                  shear=[float(p[4]), float(p[5])], interpolation=TF.InterpolationMode.NEAREST, fill=0)
        for img, p in zip(x, phi, strict=True)
    ])  # fmt: skip


@pytest.mark.parametrize("components", SUBSETS)
@pytest.mark.parametrize("size_px", [32, 33])
def test_warp_equals_torchvision(components, size_px):
    g = torch.Generator().manual_seed(1)
    spec = AffineSpec(components=components)
    x = torch.rand(48, 3, size_px, size_px, generator=g)
    phi = affine.sample(48, spec, size_px, g)
    ours, ref = affine.warp(x, phi, spec), torchvision_warp(x, phi)
    same = (ours == ref).all(dim=1).float().mean().item()
    assert same >= 0.99, f"only {same:.4f} of pixels identical"


def test_warp_uint8_round_trip_matches_torchvision():
    g = torch.Generator().manual_seed(2)
    spec = AffineSpec()
    x = torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8)
    phi = affine.sample(8, spec, 32, g)
    assert (affine.warp(x, phi, spec) == torchvision_warp(x, phi)).float().mean() >= 0.99


def test_identity_warp_is_noop():
    x = torch.rand(4, 3, 16, 16)
    phi = torch.tensor(affine.IDENTITY).repeat(4, 1)
    for interpolation in ("nearest", "bilinear"):
        assert torch.equal(affine.warp(x, phi, AffineSpec(interpolation=interpolation)), x)


def test_integer_translation_is_a_shift():
    x = torch.rand(1, 1, 8, 8)
    phi = torch.tensor([[0.0, 2.0, -1.0, 1.0, 0.0, 0.0]])
    out = affine.warp(x, phi, AffineSpec())
    assert torch.equal(out[0, 0, :-1, 2:], x[0, 0, 1:, :-2])  # content moves right 2, up 1
    assert out[0, 0, :, :2].eq(0).all() and out[0, 0, -1, :].eq(0).all()


def test_sample_ranges_match_paper():
    g = torch.Generator().manual_seed(0)
    phi = affine.sample(20000, AffineSpec(), 64, g)
    angle, t, scale, shear = phi[:, 0], phi[:, 1:3], phi[:, 3], phi[:, 4:6]
    assert angle.min() >= -90 and angle.max() <= 90 and angle.min() < -89 and angle.max() > 89
    assert torch.equal(t, t.round()) and t.min() == -16 and t.max() == 16  # ±0.25·64 whole pixels
    assert scale.min() >= 0.7 and scale.max() <= 1.3
    assert shear.abs().max() <= 25 and shear.abs().max() > 24.9
    # independent, uniform: means near the centre, correlations near 0
    assert abs(angle.mean()) < 2 and abs(scale.mean() - 1) < 0.01
    assert torch.corrcoef(phi[:, [0, 3, 4, 5]].T).sub(torch.eye(4)).abs().max() < 0.05


def test_disabled_components_stay_identity_and_leave_target():
    g = torch.Generator().manual_seed(0)
    spec = AffineSpec(components=("scale", "rotation"))
    assert spec.components == ("rotation", "scale")  # canonical order
    phi = affine.sample(100, spec, 32, g)
    assert torch.equal(phi[:, [1, 2, 4, 5]], torch.zeros(100, 4))
    assert affine.target_dim(spec) == 2
    assert [affine.target_dim(AffineSpec(components=(c,))) for c in COMPONENTS] == [1, 2, 1, 2]


def test_paper_target_encoding_exact():
    phi = torch.tensor([[45.0, 16.0, -8.0, 1.2, 25.0, -12.5]])
    target = affine.targets(phi, AffineSpec(), 64)
    expected = torch.tensor([[45 / 360, 16 / 64, -8 / 64, 1.2, 1.0, -0.5]])
    torch.testing.assert_close(target, expected)


@pytest.mark.parametrize("encoding", ["paper", "standardized"])
@pytest.mark.parametrize("components", [*SUBSETS, ("translation", "shear")])
def test_targets_round_trip(encoding, components):
    g = torch.Generator().manual_seed(3)
    spec = AffineSpec(components=components, target=encoding)
    phi = affine.sample(64, spec, 32, g)
    torch.testing.assert_close(affine.decode(affine.targets(phi, spec, 32), spec, 32), phi)


def test_standardized_targets_have_unit_spread():
    g = torch.Generator().manual_seed(4)
    spec = AffineSpec(target="standardized")
    t = affine.targets(affine.sample(50000, spec, 64, g), spec, 64)
    assert t.mean(0).abs().max() < 0.03
    assert (t.std(0) - 1).abs().max() < 0.05


def test_aggregation_and_head_shapes():
    h, ht = torch.randn(5, 7), torch.randn(5, 7)
    torch.testing.assert_close(affine.aggregate(h, ht, "diff"), h - ht)
    assert torch.equal(affine.aggregate(h, ht, "concat"), torch.cat([h, ht], 1))
    head = affine.build_head(AffineSpec(aggregation="concat"), 7)
    assert head(affine.aggregate(h, ht, "concat")).shape == (5, 6)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head[0].in_features == 14 and head[0].out_features == 512


def test_head_parameter_overhead_matches_paper():
    # paper §1.7: the 6-output head on ResNet-50 features has 1,053,190 parameters
    head = affine.build_head(AffineSpec(), 2048)
    assert sum(p.numel() for p in head.parameters()) == 1_053_190


def test_affine_loss_is_mse():
    pred, target = torch.randn(6, 4), torch.randn(6, 4)
    assert torch.allclose(affine.affine_loss(pred, target), ((pred - target) ** 2).mean())


def largest_valid_rectangle_area(mask):
    """Naive reference: the largest axis-aligned all-true rectangle in a small boolean mask."""
    h, w = mask.shape
    best = 0
    for top, left in itertools.product(range(h), range(w)):
        for bottom in range(top, h):
            for right in range(left, w):
                if (right - left + 1) * (bottom - top + 1) > best and mask[top : bottom + 1, left : right + 1].all():
                    best = (right - left + 1) * (bottom - top + 1)
    return best


def test_bounded_fill_has_no_black_and_crops_near_the_largest_rectangle():
    g = torch.Generator().manual_seed(5)
    size = 16
    black, bounded = AffineSpec(), AffineSpec(fill="bounded")
    phi = affine.sample(6, black, size, g)
    ones = torch.ones(6, 1, size, size)
    assert affine.warp(ones, phi, bounded).eq(1).all()  # every output pixel comes from the image
    valid = affine.warp(ones, phi, black)[:, 0].bool()  # (6, H, W) pixels of the black-fill warp
    matrix = affine._bounded(affine.inverse_matrix(phi), size, size)
    crop_area = (matrix[:, :, :2].det().abs() / affine.inverse_matrix(phi)[:, :, :2].det().abs()) * size * size
    for i in range(6):
        reference = largest_valid_rectangle_area(valid[i])
        assert crop_area[i] >= 0.8 * reference, (crop_area[i].item(), reference)


def test_sampling_is_seeded():
    spec = AffineSpec()
    a = affine.sample(10, spec, 32, torch.Generator().manual_seed(7))
    b = affine.sample(10, spec, 32, torch.Generator().manual_seed(7))
    c = affine.sample(10, spec, 32, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
