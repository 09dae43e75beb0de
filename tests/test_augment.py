"""Oracles for affssl.augment: each batched op against torchvision.transforms.v2.functional, image by image."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from affssl import augment, pixelops
from affssl.spec import AugmentSpec


def _images(n: int = 6, size: tuple[int, int] = (16, 16), seed: int = 0) -> torch.Tensor:
    """(n, 3, H, W) float32 on the uint8 grid, so channel ties (grey pixels, equal maxima) occur."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), generator=gen).float() / 255


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("ours", "theirs", "bounds", "atol"),
    [
        (pixelops.adjust_brightness, TF.adjust_brightness, (0.0, 2.0), 1e-6),
        (pixelops.adjust_contrast, TF.adjust_contrast, (0.0, 2.0), 1e-5),
        (pixelops.adjust_saturation, TF.adjust_saturation, (0.0, 2.0), 1e-5),
        (pixelops.adjust_hue, TF.adjust_hue, (-0.5, 0.5), 1e-5),
    ],
)
def test_colour_ops_match_torchvision(ours, theirs, bounds, atol):
    x = _images(8)
    factor = bounds[0] + (bounds[1] - bounds[0]) * torch.rand(8, generator=_gen(1))
    factor[0], factor[1] = bounds  # the ends of the range too
    got = ours(x, factor)
    want = torch.stack([theirs(x[i], float(factor[i])) for i in range(8)])
    torch.testing.assert_close(got, want, atol=atol, rtol=0)


def test_grayscale_and_solarize_match_torchvision():
    x = _images()
    torch.testing.assert_close(pixelops.grayscale(x), TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6, rtol=0)
    assert torch.equal(pixelops.solarize(x, 0.5), TF.solarize(x, 0.5))


@pytest.mark.parametrize("kernel_px", [3, 7])
def test_gaussian_blur_matches_torchvision(kernel_px):
    x = _images(5, (16, 20))
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0])
    got = pixelops.gaussian_blur(x, sigma, kernel_px)
    want = torch.stack([TF.gaussian_blur(x[i], [kernel_px] * 2, [float(sigma[i])] * 2) for i in range(5)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(16, 16), (10, 14), (40, 24)])
def test_resized_crop_flip_matches_torchvision(size):
    x = _images(6, (16, 20))
    boxes = torch.tensor([[0, 0, 16, 20], [3, 5, 4, 6], [10, 0, 6, 7], [1, 13, 15, 7], [7, 8, 2, 3], [0, 19, 16, 1]])
    flip = torch.tensor([False, True, False, True, True, False])
    got = augment.resized_crop_flip(x, boxes, flip, size)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        want = TF.resized_crop(x[i], top, left, h, w, list(size), InterpolationMode.BILINEAR, antialias=False)
        want = TF.horizontal_flip(want) if flip[i] else want
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)


def test_crop_boxes_follow_random_resized_crop():
    H, W, scale, ratio = 64, 48, (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = augment.crop_boxes(4000, H, W, scale, ratio, _gen(3))
    assert boxes.shape == (4000, 4) and boxes.dtype == torch.int64
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= H).all() and (left + w <= W).all()
    # Rounding w and h to whole pixels moves area and ratio a little past the bounds; allow for it.
    area_frac = (h * w).float() / (H * W)
    aspect = w.float() / h.float()
    assert (area_frac >= scale[0] * 0.8).all() and (area_frac <= scale[1]).all()
    assert (aspect >= ratio[0] * 0.8).all() and (aspect <= ratio[1] / 0.8).all()
    assert area_frac.min() < 0.1 and area_frac.max() > 0.9  # the whole range is used
    assert top.max() > 0 and left.max() > 0  # offsets vary
    assert torch.equal(boxes, augment.crop_boxes(4000, H, W, scale, ratio, _gen(3)))
    assert not torch.equal(boxes, augment.crop_boxes(4000, H, W, scale, ratio, _gen(4)))


@pytest.mark.parametrize(
    ("ratio", "want"),
    [((3 / 4, 4 / 3), [0, 0, 32, 32]), ((2.0, 3.0), [8, 0, 16, 32]), ((0.25, 0.5), [0, 8, 32, 16])],
)
def test_crop_boxes_fall_back_to_centre_crop(ratio, want):
    boxes = augment.crop_boxes(5, 32, 32, (2.0, 3.0), ratio, _gen())  # area > image: no attempt fits
    assert boxes.tolist() == [want] * 5


def test_blur_kernel_px():
    assert [augment.blur_kernel_px(s, 0.1) for s in (10, 20, 32, 64, 224)] == [1, 3, 3, 7, 23]


def test_color_jitter_applies_ops_in_each_samples_order():
    x = _images(6)
    apply = torch.tensor([True, True, True, True, True, False])
    factors = torch.tensor([[1.5, 0.5, 1.8, 0.2], [0.3, 1.6, 0.0, -0.4]]).repeat(3, 1)  # (6, 4)
    order = torch.stack([torch.randperm(4, generator=_gen(i)) for i in range(6)])  # (6, 4)
    got = pixelops.color_jitter(x, apply, factors, order)
    theirs = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(6):
        want = x[i]
        for k in order[i].tolist() if apply[i] else []:
            want = theirs[k](want, float(factors[i, k]))
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)


def test_jitter_params_ranges():
    spec = AugmentSpec(brightness=0.8, contrast=1.5, saturation=0.3, hue=0.2, jitter_p=0.5)
    apply, factors, order = augment.jitter_params(5000, spec, _gen())
    assert 0.45 < apply.float().mean() < 0.55
    lo = torch.tensor([0.2, 0.0, 0.7, -0.2])
    hi = torch.tensor([1.8, 2.5, 1.3, 0.2])
    assert ((factors >= lo) & (factors <= hi)).all()
    assert torch.equal(order.sort(1).values, torch.arange(4).expand(5000, 4))


@pytest.mark.parametrize("shape", [(8, 3, 32, 32), (4, 3, 64, 48)])
def test_views_deterministic_shape_range(shape):
    x = torch.randint(0, 256, shape, generator=_gen(), dtype=torch.uint8)
    spec = AugmentSpec(solarize_p=(0.0, 0.2))
    v1, v2 = augment.views(x, spec, _gen(7))
    for v in (v1, v2):
        assert v.shape == x.shape and v.dtype == torch.float32
        assert v.min() >= 0 and v.max() <= 1
    assert not torch.equal(v1, v2)
    w1, w2 = augment.views(x, spec, _gen(7))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    u1, _ = augment.views(x, spec, _gen(8))
    assert not torch.equal(v1, u1)


def test_probability_zero_is_identity():
    x = _images(6, (32, 32))
    off = AugmentSpec(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=(0, 0))
    torch.testing.assert_close(augment.view(x, off, _gen(), 0), x, atol=1e-6, rtol=0)  # full-image crop
    assert torch.equal(pixelops.color_jitter(x, *augment.jitter_params(6, off, _gen())), x)
    no_strength = off.model_copy(update={"jitter_p": 1.0, "brightness": 0, "contrast": 0, "saturation": 0, "hue": 0})
    assert torch.equal(pixelops.color_jitter(x, *augment.jitter_params(6, no_strength, _gen())), x)


def test_probability_one_applies_each_op():
    x = _images(6, (32, 32))
    off = AugmentSpec(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0, jitter_p=0, grayscale_p=0)
    no_blur = off.model_copy(update={"blur_p": (0.0, 0.0)})
    flipped = augment.view(x, no_blur.model_copy(update={"flip_p": 1.0}), _gen(), 0)
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-6, rtol=0)
    grey = augment.view(x, no_blur.model_copy(update={"grayscale_p": 1.0}), _gen(), 0)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    solar = augment.view(x, no_blur.model_copy(update={"solarize_p": (0.0, 1.0)}), _gen(), 1)
    torch.testing.assert_close(solar, TF.solarize(x, 0.5), atol=1e-6, rtol=0)
    # The default always blurs; with only view 1 blurring, view 0 stays sharp.
    sharp = augment.view(x, off.model_copy(update={"blur_p": (0.0, 1.0)}), _gen(), 0)
    blurred = augment.view(x, off.model_copy(update={"blur_p": (0.0, 1.0)}), _gen(), 1)
    torch.testing.assert_close(sharp, x, atol=1e-6, rtol=0)
    assert (blurred - x).abs().mean() > 1e-3
    assert math.isclose(blurred.mean().item(), x.mean().item(), abs_tol=1e-2)
