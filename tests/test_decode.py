"""affssl.data.decode on PNG: TorchCodec's pixels (16-bit → high byte) and PIL's fallback equal torchvision's for
every colour type and depth; a corrupt PNG is one line."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from affssl.data.decode import PNG_SIGNATURE, _pil_png, decode_png

W, H = 7, 9


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(rows: np.ndarray, width: int, color_type: int, depth: int, idat: bytes | None = None) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit colour or 2/4-bit grey); rows: (H, row bytes), filter 0."""
    raw = b"".join(b"\0" + r.tobytes() for r in rows)
    header = struct.pack(">IIBBBBB", width, rows.shape[0], depth, color_type, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat or zlib.compress(raw)) + _chunk(b"IEND", b"")


def _saved(im: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **options)
    return buf.getvalue()


def _flavours() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    u16 = lambda channels: rng.integers(0, 2**16, (H, W * channels)).astype(">u2")  # noqa: E731
    return {
        "RGB": _saved(Image.fromarray(rgb)),
        "RGBA": _saved(Image.fromarray(rng.integers(0, 256, (H, W, 4), dtype=np.uint8))),
        "L": _saved(Image.fromarray(rgb[..., 0])),
        "LA": _saved(Image.fromarray(rng.integers(0, 256, (H, W, 2), dtype=np.uint8), "LA")),
        "P": _saved(Image.fromarray(rgb).quantize(16)),
        "P+tRNS": _saved(Image.fromarray(rgb).quantize(16), transparency=3),
        "P 2-bit": _saved(Image.fromarray(rgb).quantize(4), bits=2),
        "RGB+tRNS": _saved(Image.fromarray(rgb), transparency=(1, 2, 3)),
        "1-bit": _saved(Image.fromarray(rgb[..., 0] > 128)),
        "grey 2-bit": _png(rng.integers(0, 256, (H, 2), dtype=np.uint8), W, 0, 2),
        "grey 4-bit": _png(rng.integers(0, 256, (H, 4), dtype=np.uint8), W, 0, 4),
        "grey 16-bit": _png(u16(1), W, 0, 16),
        "RGB 16-bit": _png(u16(3), W, 2, 16),
        "RGBA 16-bit": _png(u16(4), W, 6, 16),
        "LA 16-bit": _png(u16(2), W, 4, 16),
    }


@pytest.mark.parametrize("name", list(_flavours()))
def test_png_pixels_equal_torchvision(name):
    data = _flavours()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        want = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    want = TF.to_dtype(want, torch.uint8, scale=True)  # (3, H, W); 16 bits → the high byte
    for got in (decode_png(data), _pil_png(data)):
        assert got.dtype == torch.uint8 and got.shape == (3, H, W) and torch.equal(got, want)


def test_corrupt_pngs_end_pretrain_in_one_line_on_stderr(tmp_path):
    """torchvision's libpng decoder printed "libpng error: …" itself, and crashed (SIGSEGV) on a bad IDAT stream."""
    folder = tmp_path / "images" / "cls"
    folder.mkdir(parents=True)
    good = _flavours()["RGB"]
    for i in range(3):
        (folder / f"good-{i}.png").write_bytes(good)
    (folder / "bad-header.png").write_bytes(good[:29] + bytes([good[29] ^ 0xFF]) + good[30:])  # IHDR checksum
    rows = np.zeros((H, 3 * W), dtype=np.uint8)
    (folder / "bad-stream.png").write_bytes(_png(rows, W, 2, 8, idat=b"\x78\x9c" + b"\xff" * 32))  # valid chunk CRC
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "AFFSSL_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "affssl", "pretrain", "--dataset", str(folder.parent), "--out",
                           str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2", "--no-progress",
                           "--set", "backbone.width=4", "--set", "data.image_size_px=8"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "libpng" not in proc.stderr, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: 2 of 5 images in ") and line.endswith("remove or replace them, or raise "
                                                                         "data.max_bad_frac"), line  # fmt: skip
    assert f"{folder / 'bad-header.png'} (decode_png failed: IHDR: CRC error)" in line
    assert f"{folder / 'bad-stream.png'} (" in line
