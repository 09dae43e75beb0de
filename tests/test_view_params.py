"""Each view's parameters (affssl.augment.ViewParams): the same pixels and draws as before, and the pixels
rebuilt from the parameters alone, image by image, with torchvision's functional ops."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from affssl import augment
from affssl.data import crops
from affssl.spec import AugmentSpec


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _uint8(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, *size), generator=_gen(seed), dtype=torch.uint8)


SPEC = AugmentSpec(jitter_p=0.5, grayscale_p=0.3, blur_p=(0.5, 0.5), solarize_p=(0.0, 0.5))


def test_params_change_no_pixel_and_no_draw():
    x = _uint8(12, (32, 32))
    g_plain, g_params = _gen(5), _gen(5)
    v1, v2 = augment.views(x, SPEC, g_plain)
    w1, w2, p1, p2 = augment.views_with_params(x, SPEC, g_params)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert torch.equal(g_plain.get_state(), g_params.get_state())  # the stream is where it was
    for p in (p1, p2):
        assert p.box_px.shape == (12, 4) and p.flip.shape == p.jitter.shape == p.grayscale.shape == (12,)
        assert p.jitter_factors.shape == p.jitter_order.shape == (12, 4)


def _rebuild(x: torch.Tensor, p: augment.ViewParams, size: int, kernel_px: int) -> torch.Tensor:
    """One image's view from its parameters, with torchvision's ops in the pipeline's order (the naive way)."""
    top, left, h, w = p.box_px.tolist()
    out = TF.resized_crop(x, top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=False)
    out = TF.horizontal_flip(out) if p.flip else out
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for k in p.jitter_order.tolist() if p.jitter else []:
        out = ops[k](out, float(p.jitter_factors[k]))
    out = TF.rgb_to_grayscale(out, num_output_channels=3) if p.grayscale else out
    out = TF.gaussian_blur(out, [kernel_px] * 2, [float(p.blur_sigma_px)] * 2) if p.blur else out
    return TF.solarize(out, 0.5) if p.solarize else out


def _row(p: augment.ViewParams, i: int) -> augment.ViewParams:
    return augment.ViewParams(*(getattr(p, f)[i] for f in p.__dataclass_fields__))


def test_the_parameters_rebuild_each_view_with_torchvision():
    x = _uint8(16, (32, 32), seed=1)
    v1, v2, p1, p2 = augment.views_with_params(x, SPEC, _gen(2))
    assert p1.jitter.any() and not p1.jitter.all() and p2.solarize.any() and p1.blur.any() and p1.flip.any()
    kernel_px = augment.blur_kernel_px(32, SPEC.blur_kernel_frac)
    for v, p in ((v1, p1), (v2, p2)):
        for i in range(16):
            want = _rebuild(x[i].float() / 255, _row(p, i), 32, kernel_px)
            torch.testing.assert_close(v[i], want, atol=2e-5, rtol=0)


def test_box_fractions_on_whole_images_of_several_sizes():
    images = [_uint8(1, size, seed=i)[0] for i, size in enumerate([(40, 24), (20, 36), (32, 32)])]
    x, sizes = crops.pad(images)  # (3, 3, 40, 36), (3, 2)
    v1, _, p1, _ = augment.views_with_params(x, SPEC, _gen(3), sizes, 16)
    assert v1.shape == (3, 3, 16, 16) and torch.equal(p1.source_px, sizes)
    frac = p1.box_frac
    assert torch.equal(frac, p1.box_px / sizes.repeat(1, 2))
    assert ((frac[:, :2] >= 0) & (frac[:, :2] + frac[:, 2:] <= 1) & (frac[:, 2:] > 0)).all()
    assert torch.equal(v1, augment.views(x, SPEC, _gen(3), sizes, 16)[0])


@pytest.mark.parametrize("sizes", [False, True])
def test_shared_draws_give_every_row_of_a_group_the_same_parameters(sizes):
    x = _uint8(6, (24, 24))
    size_arg = torch.tensor([[24, 24]] * 6) if sizes else None
    rows = torch.tensor([0, 0, 0, 1, 1, 2])
    out, p = augment.crop_view_params(x.float() / 255, SPEC, _gen(4), 1, (16, 16), SPEC.crop_scale, 0.5, 0.5,
                                      size_arg, shared=(3, rows))  # fmt: skip
    assert out.shape == (6, 3, 16, 16)
    for field in p.__dataclass_fields__:
        t = getattr(p, field)
        assert torch.equal(t[0], t[1]) and torch.equal(t[1], t[2]) and torch.equal(t[3], t[4])
    # the k sets are the parameters of k unshared views drawn from the same stream
    _, q = augment.crop_view_params(x[:3].float() / 255, SPEC, _gen(4), 1, (16, 16), SPEC.crop_scale, 0.5, 0.5,
                                    size_arg[:3] if sizes else None)  # fmt: skip
    assert torch.equal(q.box_px[rows], p.box_px) and torch.equal(q.jitter_factors[rows], p.jitter_factors)
