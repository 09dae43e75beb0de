"""Image files → (N, 3, S, S) uint8 tensors: batched JPEG decoding, a PIL fallback, resize and centre crop.

Files are read and decoded in chunks (bounded memory for large images); all JPEGs of a chunk go
through one torchvision `decode_jpeg` call, PNGs through PIL, anything else through `decode_image`
or PIL. Each group of equal-size images is resized in one call. Unreadable files are reported, not
raised: the caller (affssl.data.sources) names them all in one error.

Why not torchvision for PNG: its libpng decoder writes "libpng error: …" to stderr itself, and on a
corrupt IDAT stream it crashes the process (SIGSEGV, torchvision 0.29). PIL's pixels are the same
(tests compare every PNG colour type and bit depth with torchvision's).
"""

from __future__ import annotations

import io
import re
import warnings
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngImageFile
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as TF

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_FILES, _CHUNK_BYTES = 1024, 32 << 20  # decode in batches; bounds memory for large images
Entry = tuple[str, int, int]  # (path, size, mtime_ns)


def square(images: Tensor, size: int) -> Tensor:
    """(N, 3, h, w) uint8 → (N, 3, S, S): short side to S (antialiased), centre crop."""
    if images.shape[-2:] == (size, size):
        return images
    return TF.center_crop(TF.resize(images, size, antialias=True), [size, size]).contiguous()


def decode_files(files: list[Entry], size: int, failures: list, advance: Callable[[int], None]) -> Tensor:
    """Read and decode in chunks; unreadable files are added to failures as (path, reason)."""
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)  # (N, 3, S, S)
    pending, nbytes = [], 0
    for i, (path, _, _) in enumerate(files):
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as err:
            data = err.strerror or str(err)
        pending.append((path, data))
        nbytes += len(data)
        if len(pending) == _CHUNK_FILES or nbytes >= _CHUNK_BYTES or i == len(files) - 1:
            _decode_chunk(pending, out[i + 1 - len(pending) : i + 1], failures)
            advance(len(pending))
            pending, nbytes = [], 0
    return out


def _decode_chunk(pending: list[tuple[str, bytes | str]], out: Tensor, failures: list) -> None:
    """Decode (path, bytes or read error) pairs into out (n, 3, S, S); a failed slot keeps garbage."""
    raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) if d and isinstance(d, bytes) else d for _, d in pending]
    images: list[Tensor | None] = [None] * len(pending)
    jpegs = [i for i, (_, d) in enumerate(pending) if isinstance(d, bytes) and d[:3] == b"\xff\xd8\xff"]
    with warnings.catch_warnings():  # torchvision ≥ 0.29 warns on every image call
        warnings.simplefilter("ignore", DeprecationWarning)
        try:  # one call for all the JPEGs: faster than decode_image per file
            decoded = decode_jpeg([raw[i] for i in jpegs], mode=ImageReadMode.RGB) if jpegs else []
            for i, img in zip(jpegs, decoded, strict=True):
                images[i] = img  # (3, h, w)
        except RuntimeError:
            pass  # one bad file fails the whole batch: decode one by one below to find it
        for i, ((path, _), r) in enumerate(zip(pending, raw, strict=True)):
            if images[i] is None:
                images[i] = _decode_one(path, r, failures)
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        if img is not None:
            by_shape[tuple(img.shape)].append(i)
    for idx in by_shape.values():  # resize each group of equal-size images in one call
        out[idx] = square(torch.stack([images[i] for i in idx]), out.shape[-1])


def _decode_one(path: str, raw: Tensor | str, failures: list) -> Tensor | None:
    """PIL for PNG, else torchvision.io, else PIL (BMP); None, with (path, reason) added to failures, when unread."""
    if not isinstance(raw, Tensor):
        failures.append((path, raw or "empty file"))
        return None
    if raw[: len(PNG_SIGNATURE)].numpy().tobytes() == PNG_SIGNATURE:
        try:
            return decode_png(raw.numpy().tobytes())
        except (OSError, ValueError, SyntaxError) as err:  # PIL's PNG reader raises SyntaxError for a bad chunk
            failures.append((path, str(err) or type(err).__name__))
            return None
    try:
        return TF.to_dtype(decode_image(raw, mode=ImageReadMode.RGB), torch.uint8, scale=True)  # 16-bit PNG
    except RuntimeError as err:
        reason = re.sub(r"^.*\.cpp:\d+,\s*", "", str(err).strip())
    try:
        with Image.open(io.BytesIO(raw.numpy().tobytes())) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)  # (3, h, w)
    except (OSError, ValueError):
        failures.append((path, reason))
        return None


def decode_png(data: bytes) -> Tensor:
    """PNG bytes → (3, h, w) uint8 through PIL, as torchvision's decode_image(RGB) + to_dtype(scale=True) gives them.

    PngImageFile, not Image.open: Image.open hides the reason ("cannot identify image file") and warns on
    very large images, which torchvision reads silently.
    """
    with PngImageFile(io.BytesIO(data)) as im:
        if im.mode.startswith("I"):  # 16-bit grey: the high byte, as to_dtype(scale=True) keeps
            grey = torch.from_numpy((np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8))  # (h, w)
            return grey.expand(3, -1, -1).contiguous()  # (3, h, w)
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)  # (3, h, w)
