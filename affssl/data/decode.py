"""Image files → (N, 3, S, S) uint8 tensors: TorchCodec decoding, a PIL fallback, resize and centre crop.

Files are read and decoded in chunks (bounded memory for large images). JPEG, PNG, WebP and GIF
go through TorchCodec (torchvision's decoders are deprecated since 0.29), anything TorchCodec
refuses (BMP, animated WebP, files PIL reads more leniently) through PIL. Each group of
equal-size images is resized in one call. Unreadable files are reported, not raised: the caller
(affssl.data.sources) names them all in one error.

Pixels are those torchvision's decoders gave (tests compare them), so the tensor cache's format
did not change: Exif APP1 segments are dropped before a JPEG is decoded, because TorchCodec turns
the image by its Exif orientation and torchvision did not (neither does PIL, nor ImageFolder);
16-bit PNG samples keep their high byte, as torchvision's `to_dtype(scale=True)` did.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngImageFile
from torch import Tensor
from torchcodec.decoders import decode_image, decode_jpeg
from torchcodec.decoders import decode_png as _torchcodec_png
from torchvision.transforms.v2 import functional as TF

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
JPEG_SIGNATURE, PNG_SIGNATURE = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
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
                data = bytearray(fh.read())
        except OSError as err:
            data = err.strerror or str(err)
        pending.append((path, data))
        nbytes += len(data)
        if len(pending) == _CHUNK_FILES or nbytes >= _CHUNK_BYTES or i == len(files) - 1:
            _decode_chunk(pending, out[i + 1 - len(pending) : i + 1], failures)
            advance(len(pending))
            pending, nbytes = [], 0
    return out


def _decode_chunk(pending: list[tuple[str, bytearray | str]], out: Tensor, failures: list) -> None:
    """Decode (path, bytes or read error) pairs into out (n, 3, S, S); a failed slot keeps garbage."""
    images: list[Tensor | None] = []
    for path, data in pending:
        try:
            images.append(decode_bytes(data) if isinstance(data, bytearray) else None)
        except ValueError as err:
            images.append(None)
            failures.append((path, str(err)))
        if isinstance(data, str):  # the read failed
            failures.append((path, data or "unreadable"))
    square_into(images, out)


def square_into(images: list[Tensor | None], out: Tensor) -> None:
    """Each decoded (3, h_i, w_i) image squared (`square`) into its row of out (n, 3, S, S); None leaves the row.

    Each group of equal-size images is resized in one call. The tensor cache's transform; the online monitor's
    images on chunk storage go through it too (affssl.data.monitorset).
    """
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        if img is not None:
            by_shape[tuple(img.shape)].append(i)
    for idx in by_shape.values():  # resize each group of equal-size images in one call
        out[idx] = square(torch.stack([images[i] for i in idx]), out.shape[-1])


def decode_bytes(data: bytes | bytearray) -> Tensor:
    """An encoded image → (3, h, w) uint8 RGB; ValueError naming the reason when neither decoder reads it."""
    if not data:
        raise ValueError("empty file")
    try:
        if data[:3] == JPEG_SIGNATURE:
            return decode_jpeg(_as_tensor(without_exif(data)), mode="RGB")  # (3, h, w)
        if data[:8] == PNG_SIGNATURE:
            return decode_png(data)
        image = decode_image(_as_tensor(data), mode="RGB")  # (3, h, w), or (frames, 3, h, w) when animated
        if image.ndim == 3:
            return image
        reason = "animated image"
    except (RuntimeError, ValueError) as err:
        reason = re.sub(r"^.*\.cpp:\d+,\s*", "", str(err).strip()).split(". If you know")[0]
    try:  # PIL reads BMP, animated images' first frame, and some files TorchCodec's libraries refuse
        if data[:8] == PNG_SIGNATURE:
            return _pil_png(data)
        with Image.open(io.BytesIO(data)) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)  # (3, h, w)
    except Exception:  # PIL's plugins raise OSError, SyntaxError, EOFError, DecompressionBombError… on bad bytes
        raise ValueError(reason) from None


def decode_png(data: bytes | bytearray) -> Tensor:
    """PNG bytes → (3, h, w) uint8; 16-bit samples keep their high byte (torchvision's to_dtype(scale=True))."""
    image = _torchcodec_png(_as_tensor(data), mode="RGB", output_dtype="auto")  # (3, h, w) uint8 or uint16
    if image.dtype == torch.uint16:
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def _as_tensor(data: bytes | bytearray) -> Tensor:
    """(n,) uint8 view of a bytearray (a copy of bytes): fastest for TorchCodec, which warns on read-only bytes."""
    return torch.frombuffer(data if isinstance(data, bytearray) else bytearray(data), dtype=torch.uint8)


def without_exif(jpeg: bytes | bytearray) -> bytes | bytearray:
    """JPEG bytes without their Exif APP1 segments (the orientation TorchCodec would apply); others kept as is.

    Walks the marker segments up to the start of scan; bytes it cannot walk are returned unchanged.
    """
    if jpeg.find(b"Exif\0\0") < 0:
        return jpeg
    parts, pos = [jpeg[:2]], 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF:
        marker = jpeg[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            parts.append(jpeg[pos : pos + 1])
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return b"".join(parts) + jpeg[pos:]
        end = pos + 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if not (marker == 0xE1 and jpeg[pos + 4 : pos + 10] == b"Exif\0\0"):
            parts.append(jpeg[pos:end])
        pos = end
    return jpeg


def _pil_png(data: bytes | bytearray) -> Tensor:
    """PNG bytes → (3, h, w) uint8 through PIL, for the files libpng refuses and PIL reads.

    PngImageFile, not Image.open: Image.open hides the reason ("cannot identify image file") and warns on
    very large images.
    """
    with PngImageFile(io.BytesIO(data)) as im:
        if im.mode.startswith("I"):  # 16-bit grey: the high byte, as to_dtype(scale=True) keeps
            grey = torch.from_numpy((np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8))  # (h, w)
            return grey.expand(3, -1, -1).contiguous()  # (3, h, w)
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)  # (3, h, w)
