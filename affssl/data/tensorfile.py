"""Plain safetensors files (no pickle) mapped into memory without a copy, and written atomically.

`safe_open(...).get_tensor` reads a tensor into process memory: each process that loads a file
holds its own copy. `map_tensors` maps the file instead; its pages come from the kernel's page
cache, one copy shared by every process of the machine that maps the same file. The map is
private (copy-on-write): the file is never written through it, and a stray in-place write to a
tensor would copy only the pages it touches. A mapped file must be replaced, never rewritten in
place: affssl only renames finished files into place (the old inode lives on under the map), but
a file truncated in place under a live map ends that process with SIGBUS. Delete, don't truncate.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

MAX_HEADER_BYTES = 2**24
DTYPES = {"U8": np.uint8, "I64": np.int64}


def map_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata; uint8 tensors are views of one memory map.

    int64 tensors are copied (they are small here, and their offsets need not be 8-byte aligned).
    Raises OSError or ValueError (also KeyError for an unsupported dtype) on a malformed file.
    """
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n < MAX_HEADER_BYTES:
            raise ValueError(f"{path}: header length {n}")
        header = json.loads(f.read(n))
    raw = np.memmap(path, dtype=np.uint8, mode="c")  # (file bytes,)
    meta, base, tensors = header.pop("__metadata__", None) or {}, 8 + n, {}
    for name, info in header.items():
        dtype = np.dtype(DTYPES[info["dtype"]])
        shape, (start, end) = tuple(info["shape"]), info["data_offsets"]
        if not 0 <= start <= end <= len(raw) - base or end - start != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name} does not fit the file")
        flat = np.asarray(raw[base + start : base + end])
        if dtype != np.uint8:
            flat = flat.copy()
        tensors[name] = torch.from_numpy(flat.view(dtype).reshape(shape))
    return tensors, meta


def write_atomic(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write a temp file in the same folder, then rename it into place; the temp file never stays.

    Raises OSError or safetensors' SafetensorError when the write fails (full disk, read-only folder).
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        os.close(fd)
        save_file({k: t.contiguous() for k, t in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
