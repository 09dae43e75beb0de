"""Whole-image random-resized crops (affssl.data.crops): torchvision's box rules, its pixels, the shared view stream."""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms import InterpolationMode

from affssl import augment
from affssl.data import crops
from affssl.spec import AugmentSpec

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def naive_box(area_frac, log_aspect, offset, height, width, ratio):
    """RandomResizedCrop.make_params (torchvision.transforms.v2) for one image, fed the given random numbers."""
    area = height * width
    for k in range(crops.ATTEMPTS):
        target_area = area * float(area_frac[k])
        aspect_ratio = float(torch.exp(log_aspect[k : k + 1]))  # float32 exp, as torchvision's tensor op
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            # torch.randint(0, height - h + 1): a uniform integer; here from the given U(0, 1)
            i = min(math.floor(float(offset[0]) * (height - h + 1)), height - h)
            j = min(math.floor(float(offset[1]) * (width - w + 1)), width - w)
            return [i, j, h, w]
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return [(height - h) // 2, (width - w) // 2, h, w]


def test_boxes_equal_the_naive_rules_with_the_same_random_numbers():
    n, gen = 3000, torch.Generator().manual_seed(0)
    sizes = torch.stack([torch.randint(1, 300, (n,), generator=gen), torch.randint(1, 300, (n,), generator=gen)], 1)
    sizes[:20] = torch.tensor([[1, 1], [1, 200], [200, 1], [3, 40], [40, 3]]).repeat(4, 1)  # fallbacks of both kinds
    draws = crops.draw(n, SCALE, RATIO, torch.Generator().manual_seed(1))
    got = crops.boxes_from(draws, sizes[:, 0], sizes[:, 1], RATIO)
    want = [naive_box(draws.area_frac[i], draws.log_aspect[i], draws.offset[i], *sizes[i].tolist(), RATIO)
            for i in range(n)]  # fmt: skip
    assert got.tolist() == want


def test_draws_consume_the_generator_as_the_square_crop_does():
    # Everything after the crop reads the same stream whichever storage feeds the views.
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    augment.crop_boxes(64, 32, 32, SCALE, RATIO, a)
    crops.crop_boxes(torch.tensor([[50, 80]] * 64), SCALE, RATIO, b)
    assert torch.equal(a.get_state(), b.get_state())


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), lo=st.floats(0.01, 1.0), seed=st.integers(0, 2**31))
def test_boxes_lie_inside_and_follow_scale_and_ratio(h, w, lo, seed):
    n, scale = 256, (lo, 1.0)
    sizes = torch.tensor([[h, w]] * n)
    draws = crops.draw(n, scale, RATIO, torch.Generator().manual_seed(seed))
    boxes = crops.boxes_from(draws, sizes[:, 0], sizes[:, 1], RATIO)
    top, left, bh, bw = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (bh >= 1).all() and (bw >= 1).all()
    assert (top + bh <= h).all() and (left + bw <= w).all()
    # a box from a try: its w, h are the rounded try (area and ratio within rounding of the bounds)
    area = draws.area_frac.double() * h * w  # (n, A)
    aspect = torch.exp(draws.log_aspect).double()
    tw, th = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (tw > 0) & (tw <= w) & (th > 0) & (th <= h)
    found = fits.any(1)
    assert torch.equal(bw[found].double(), tw[found, fits[found].int().argmax(1)])
    assert ((bw[found] * bh[found]) <= h * w).all()
    # the fallback is centred and as large as the ratio allows
    if (~found).any():
        assert ((top[~found] == (h - bh[~found]) // 2) & (left[~found] == (w - bw[~found]) // 2)).all()
        assert ((bh[~found] == h) | (bw[~found] == w)).all()


def test_crop_and_resize_of_padded_whole_images_match_torchvision():
    gen = torch.Generator().manual_seed(2)
    shapes = [(20, 31), (33, 17), (24, 24), (5, 40), (40, 9)]
    images = [torch.randint(0, 256, (3, *s), generator=gen, dtype=torch.uint8) for s in shapes]
    x, sizes = crops.pad(images)  # (5, 3, 40, 40), (5, 2)
    assert x.shape == (5, 3, 40, 40) and sizes.tolist() == [list(s) for s in shapes]
    boxes = crops.crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(3))
    flip = torch.tensor([False, True, False, True, False])
    got = augment.resized_crop_flip(x.float() / 255, boxes, flip, (16, 16))  # (5, 3, 16, 16)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        want = TF.resized_crop(images[i].float() / 255, top, left, h, w, [16, 16], InterpolationMode.BILINEAR,
                               antialias=False)  # fmt: skip
        want = TF.horizontal_flip(want) if flip[i] else want
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)


def test_views_of_whole_square_images_at_their_size_equal_the_tensor_path():
    # Same images, same generator: only the crop's box arithmetic differs (float64 here), and for a square
    # image at the training size it gives the tensor path's boxes, so the views and the stream match.
    spec = AugmentSpec()
    x = torch.randint(0, 256, (32, 3, 24, 24), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    a, b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    square = augment.views(x, spec, a)
    whole = augment.views(x, spec, b, torch.tensor([[24, 24]] * 32), 24)
    assert all(torch.equal(s, w) for s, w in zip(square, whole, strict=True))
    assert torch.equal(a.get_state(), b.get_state())


def test_views_of_whole_images_of_mixed_sizes_have_the_training_size_and_same_stream():
    spec = AugmentSpec()
    images = [torch.randint(0, 256, (3, 20 + 3 * i, 40 - 2 * i), dtype=torch.uint8) for i in range(8)]
    x, sizes = crops.pad(images)
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    v1, v2 = augment.views(x, spec, a, sizes, 16)
    assert v1.shape == v2.shape == (8, 3, 16, 16) and float(v1.min()) >= 0 and float(v1.max()) <= 1
    augment.views(torch.zeros(8, 3, 16, 16, dtype=torch.uint8), spec, b)
    assert torch.equal(a.get_state(), b.get_state())
