"""affssl.data.decode through TorchCodec: pixels equal torchvision's decoders (the cache format holds), no warnings.

Oracles: torchvision.io's decode_jpeg / decode_image (deprecated, so their warnings are silenced here
only), PIL for BMP. Inputs: generated JPEGs of every common flavour (subsampling, progressive, grey,
CMYK, Exif orientations 1–8), WebP, and the CIFAR-10 JPEGs in /work/cifar10 when present.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from affssl.data.decode import decode_bytes, decode_files, without_exif

CIFAR = Path("/work/cifar10")
ORIENTATION = 0x0112


def _torchvision(data: bytes) -> torch.Tensor:
    """torchvision's pixels, as affssl decoded before TorchCodec: decode_jpeg for JPEG, else decode_image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        decode = decode_jpeg if data[:3] == b"\xff\xd8\xff" else decode_image
        return decode(raw, mode=ImageReadMode.RGB)  # (3, h, w)


def _encoded(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    blocks = Image.fromarray(np.kron(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8)))
    out = {
        "q75 4:2:0": _encoded(noise, "JPEG"),
        "4:4:4": _encoded(noise, "JPEG", subsampling=0),
        "4:2:2": _encoded(noise, "JPEG", subsampling=1),
        "q100": _encoded(blocks, "JPEG", quality=100),
        "progressive": _encoded(noise, "JPEG", progressive=True),
        "optimized": _encoded(blocks, "JPEG", optimize=True),
        "grey": _encoded(noise.convert("L"), "JPEG"),
        "CMYK": _encoded(noise.convert("CMYK"), "JPEG"),
        "1x1": _encoded(noise.resize((1, 1)), "JPEG"),
        "WebP lossless": _encoded(noise, "WEBP", lossless=True),
        "WebP lossy": _encoded(noise, "WEBP", quality=80),
        "WebP RGBA": _encoded(noise.convert("RGBA"), "WEBP"),
    }
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        out[f"Exif orientation {orientation}"] = _encoded(noise, "JPEG", exif=exif.tobytes())
    return out


@pytest.mark.parametrize("name", list(_images()))
def test_pixels_equal_torchvision(name):
    data = _images()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TorchCodec's path warns about nothing
        got = decode_bytes(data)
    want = _torchvision(data)
    assert got.dtype == torch.uint8 and got.shape == want.shape and torch.equal(got, want)


def test_exif_is_dropped_and_nothing_else():
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    plain = _encoded(Image.new("RGB", (16, 8), (200, 30, 40)), "JPEG")
    rotated = _encoded(Image.new("RGB", (16, 8), (200, 30, 40)), "JPEG", exif=exif.tobytes())
    assert without_exif(plain) is plain and b"Exif\0\0" not in without_exif(rotated)
    assert without_exif(rotated) == plain  # PIL wrote the same segments but the Exif one
    assert without_exif(rotated[:40]) == rotated[:40]  # a header it cannot walk stays as it is


def test_animated_webp_and_bmp_fall_back_to_pil():
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)) for _ in range(2)]
    webp = _encoded(frames[0], "WEBP", lossless=True, save_all=True, append_images=frames[1:])
    bmp = _encoded(frames[0], "BMP")
    for data in (webp, bmp):
        with Image.open(io.BytesIO(data)) as im:
            want = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(decode_bytes(data), want)


def test_unreadable_bytes_name_the_reason():
    jpeg = _images()["q75 4:2:0"]
    bmp = bytearray(_encoded(Image.new("RGB", (4, 4)), "BMP"))
    bmp[18:26] = (100_000).to_bytes(4, "little") * 2  # 10¹⁰ pixels: PIL's DecompressionBombError
    for data, reason in ((b"", "empty file"), (jpeg[:200], "truncated"), (b"not an image" * 4, "nrecognized"),
                         (bytes(bmp), "nrecognized")):  # fmt: skip
        with pytest.raises(ValueError, match=reason):
            decode_bytes(data)


def test_decode_files_resizes_like_torchvision(tmp_path):
    """Mixed sizes and formats through decode_files (chunks, groups by size) = torchvision decode + resize + crop."""
    rng = np.random.default_rng(2)
    files, want = [], []
    for i, (h, w) in enumerate([(20, 30), (30, 20), (20, 30), (16, 16), (41, 17)]):
        data = _encoded(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), "JPEG" if i % 2 else "PNG")
        (path := tmp_path / f"{i}.img").write_bytes(data)
        files.append((str(path), len(data), 0))
        want.append(TF.center_crop(TF.resize(_torchvision(data)[None], 16, antialias=True), [16, 16])[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = decode_files(files, 16, failures := [], lambda n: None)
    assert not failures and torch.equal(got, torch.stack(want))


@pytest.mark.skipif(not CIFAR.is_dir(), reason=f"{CIFAR} (CIFAR-10 as JPEG files) is absent")
def test_cifar10_jpegs_equal_torchvision():
    files = sorted((CIFAR / "test").glob("*/*.jpg"))[::20]  # 500 of the 10,000, every class
    assert len(files) == 500
    for path in files:
        data = path.read_bytes()
        assert torch.equal(decode_bytes(data), _torchvision(data)), path
