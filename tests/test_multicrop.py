"""Multi-crop: local views against torchvision image by image per crop size, the global views' stream untouched,
SimCLR's and BYOL's multi-crop losses against naive references, the spec's rules."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from affssl import augment
from affssl.learner import Learner
from affssl.methods.byol import byol_loss, multicrop_byol_loss
from affssl.methods.simclr import multicrop_nt_xent, nt_xent
from affssl.spec import AugmentSpec, SpecError, load_spec

COLOUR = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _uint8(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, *size), generator=_gen(seed), dtype=torch.uint8)


def torchvision_local_views(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """The local views image by image with torchvision's ops, from parameters drawn in augment's documented order."""
    B, _, H, W = x.shape
    n, s = spec.local_crops * B, spec.local_size_px
    boxes = augment.crop_boxes(n, H, W, spec.local_crop_scale, spec.crop_ratio, gen)
    flip = torch.rand(n, generator=gen) < spec.flip_p
    apply, factors, order = augment.jitter_params(n, spec, gen)
    grey = torch.rand(n, generator=gen) < spec.grayscale_p
    sigma = spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * torch.rand(n, generator=gen)
    blur = torch.rand(n, generator=gen) < spec.local_blur_p
    solar = torch.rand(n, generator=gen) < spec.local_solarize_p
    kernel = augment.blur_kernel_px(s, spec.blur_kernel_frac)
    out = []
    for r in range(n):
        img = x[r % B].float() / 255  # row c·B + i is local view c of image i
        top, left, h, w = boxes[r].tolist()
        v = TF.resized_crop(img, top, left, h, w, [s, s], InterpolationMode.BILINEAR, antialias=False)
        v = TF.horizontal_flip(v) if flip[r] else v
        for k in order[r].tolist() if apply[r] else []:
            v = COLOUR[k](v, float(factors[r, k]))
        v = TF.rgb_to_grayscale(v, num_output_channels=3) if grey[r] else v
        v = TF.gaussian_blur(v, [kernel] * 2, [float(sigma[r])] * 2) if blur[r] and kernel >= 3 else v
        out.append(TF.solarize(v, 0.5) if solar[r] else v)
    return torch.stack(out)


@pytest.mark.parametrize(("image", "local_px"), [((32, 32), 18), ((32, 32), 9), ((24, 40), 12)])
def test_local_views_match_torchvision_per_crop_size(image, local_px):
    x = _uint8(4, image)
    spec = AugmentSpec(
        local_crops=3, local_size_px=local_px, local_blur_p=0.5, local_solarize_p=0.3, blur_kernel_frac=0.3
    )  # kernels of 3 and 5 px at these sizes
    got = augment.local_views(x, spec, _gen(5))
    assert got.shape == (12, 3, local_px, local_px) and got.dtype == torch.float32
    want = torchvision_local_views(x, spec, _gen(5))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_local_crops_sample_side_by_side_as_one_crop_each():
    """k crops of each image in one grid_sample equal the same boxes cut from k copies of the batch, exactly."""
    x = torch.rand(5, 3, 20, 16, generator=_gen())
    boxes = augment.crop_boxes(15, 20, 16, (0.05, 0.4), (3 / 4, 4 / 3), _gen(1))  # (3·5, 4)
    flip = torch.rand(15, generator=_gen(2)) < 0.5
    together = augment.resized_crop_flip(x, boxes, flip, (7, 7))
    apart = torch.cat([augment.resized_crop_flip(x, boxes[c * 5 : (c + 1) * 5], flip[c * 5 : (c + 1) * 5], (7, 7))
                       for c in range(3)])  # fmt: skip
    assert torch.equal(together, apart)


def test_local_crop_areas_follow_their_own_scale():
    spec = AugmentSpec(local_crops=4, local_crop_scale=(0.05, 0.4))
    boxes = augment.crop_boxes(4000, 64, 64, spec.local_crop_scale, spec.crop_ratio, _gen())
    area_frac = (boxes[:, 2] * boxes[:, 3]).float() / 64**2
    assert area_frac.min() >= 0.05 * 0.8 and area_frac.max() <= 0.4 * 1.1  # whole pixels move the bounds a little
    assert area_frac.min() < 0.07 and area_frac.max() > 0.35


def test_local_views_leave_the_global_views_stream_unchanged():
    """Global views come first from the generator; a run without local views draws nothing more."""
    x = _uint8(6, (16, 16))
    plain, multi = AugmentSpec(), AugmentSpec(local_crops=4, local_size_px=9)
    g_plain, g_multi = _gen(3), _gen(3)
    a = augment.views(x, plain, g_plain)
    b = augment.views(x, multi, g_multi)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert torch.equal(g_plain.get_state(), g_multi.get_state())
    local = augment.local_views(x, multi, g_multi)
    assert local.shape == (24, 3, 9, 9) and local.min() >= 0 and local.max() <= 1
    assert not torch.equal(g_plain.get_state(), g_multi.get_state())


def test_a_learner_without_local_views_never_draws_them(monkeypatch):
    def refuse(*args):
        raise AssertionError("local views drawn")

    monkeypatch.setattr(augment, "local_views", refuse)
    learner = Learner(load_spec("default", ["backbone.width=4", "data.image_size_px=16"]))
    learner(_uint8(4, (16, 16)), _gen(), _gen(1))


# ---------------------------------------------------------------------------------------------
# The multi-crop losses


def naive_multicrop_nt_xent(z: torch.Tensor, temperature: float) -> float:
    V, N, _ = z.shape
    crops = [(c, i, z[c, i] / z[c, i].norm()) for c in range(V) for i in range(N)]
    total = 0.0
    for c, i, a in crops:
        pos = neg = 0.0
        for d, j, b in crops:
            if (d, j) == (c, i):
                continue
            e = math.exp(float(a @ b) / temperature)
            if j != i:
                neg += e
            elif c < 2 or d < 2:  # a local view pairs with the global views only
                pos += e
        total += -math.log(pos / (pos + neg))
    return total / len(crops)


def naive_multicrop_byol(p: torch.Tensor, t: torch.Tensor) -> float:
    cos = lambda u, v: float(u @ v) / (float(u.norm()) * float(v.norm()))  # noqa: E731
    V, N, _ = p.shape
    pairs = [(i, j) for i in range(2) for j in range(V) if j != i]
    return 2 * sum(sum(2 - 2 * cos(p[j, k], t[i, k]) for k in range(N)) / N for i, j in pairs) / len(pairs)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_multicrop_nt_xent_equals_naive(temperature):
    z = torch.randn(5, 6, 4, generator=_gen(), dtype=torch.float64)
    assert multicrop_nt_xent(z, temperature).item() == pytest.approx(naive_multicrop_nt_xent(z, temperature), rel=1e-9)


def test_multicrop_losses_with_two_crops_are_the_two_view_losses():
    z = torch.randn(2, 8, 5, generator=_gen(1), dtype=torch.float64)
    torch.testing.assert_close(multicrop_nt_xent(z, 0.2), nt_xent(z[0], z[1], 0.2))
    p, t = torch.randn(2, 2, 8, 5, generator=_gen(2), dtype=torch.float64)
    torch.testing.assert_close(multicrop_byol_loss(p, t), byol_loss(p[0], p[1], t[0], t[1]))


def test_multicrop_byol_equals_naive():
    p = torch.randn(4, 6, 5, generator=_gen(3), dtype=torch.float64)
    t = torch.randn(2, 6, 5, generator=_gen(4), dtype=torch.float64)
    assert multicrop_byol_loss(p, t).item() == pytest.approx(naive_multicrop_byol(p, t), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# The spec


def test_local_views_need_a_base_that_pairs_them():
    with pytest.raises(SpecError, match=r"augment.local_crops = 2, but barlow .* set augment.local_crops=0"):
        load_spec("default", ["method.name=barlow", "augment.local_crops=2"])


def test_local_size_defaults_to_nine_sixteenths_of_the_image():
    spec = load_spec("default", ["method.name=dino", "augment.local_crops=6", "data.image_size_px=32"])
    assert spec.augment.local_size_px == 18  # solo-learn's CIFAR 2 × 32 px + 6 × 18 px
    assert load_spec("default", ["augment.local_size_px=12", "augment.local_crops=2"]).augment.local_size_px == 12
    assert load_spec("default").augment.local_size_px is None  # not used, not resolved
    with pytest.raises(SpecError, match="local_crop_scale"):
        load_spec("default", ["augment.local_crop_scale=[0.5, 0.1]"])
