"""The tensor cache: a source's decoded uint8 splits as one safetensors file, keyed, memory-mapped.

The key is the sha256 of the source's identity (paths, sizes, mtimes), the image size and a format
version, so an edit to the source invalidates it. The cached images are memory-mapped, not read:
the pixels live once in the page cache, shared by every process of the node that maps the file
(under torchrun the node's local rank 0 decodes and writes it while the other ranks wait, then all
map it). A failed write only warns: training goes on from the decoded copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import Tensor

from affssl import distributed
from affssl.data.dataset import Loaded, Split
from affssl.data.tensorfile import map_tensors, write_atomic
from affssl.spec import DataSpec

FORMAT_VERSION = 1  # bump when the decoded content changes, so old cache files are not reused


def cache_dir(spec: DataSpec) -> Path:
    """spec.root, else $AFFSSL_CACHE, else ~/.cache/affssl."""
    return Path(spec.root or os.environ.get("AFFSSL_CACHE") or Path.home() / ".cache" / "affssl")


def through_cache(spec: DataSpec, source: str, identify: Callable[[], object], build: Callable[[], Loaded]) -> Loaded:
    """The cached data, memory-mapped; on a miss build it, write the cache and map that.

    Under torchrun the node's local rank 0 goes first; the others wait at a barrier, then map the
    file it wrote (or, if it could not write one, build their own). Every rank passes the barrier
    once, also when local rank 0 fails, so its error reaches every rank instead of a hang.
    """
    with distributed.local_rank0_first():
        if (loaded := read_cache(cache_path(spec, source, identify()), spec.image_size_px)) is not None:
            return loaded
        loaded = build()
        path = cache_path(spec, source, identify())  # identify again: a download may have created the files
        write_cache(path, *loaded)
        return read_cache(path, spec.image_size_px) or loaded  # the map, so the decoded copy can go


def cache_path(spec: DataSpec, source: str, identity: object) -> Path:
    blob = json.dumps([source, identity, spec.image_size_px, FORMAT_VERSION])
    return cache_dir(spec) / "decoded" / f"{hashlib.sha256(blob.encode()).hexdigest()}.safetensors"


def read_cache(path: Path, size: int) -> Loaded | None:
    """The cached data (images mapped, not copied), or None when absent, corrupt or malformed."""
    if not path.is_file():
        return None
    try:
        t, meta = map_tensors(path)
        classes = tuple(json.loads(meta["classes"]))
    except (OSError, KeyError, TypeError, ValueError):
        return None
    splits = [Split(t[f"images_{p}"], t.get(f"labels_{p}")) if f"images_{p}" in t else None for p in ("train", "test")]
    try:
        skipped = tuple((str(p), str(why)) for p, why in json.loads(meta.get("skipped", "[]")))
    except (TypeError, ValueError):
        return None
    for s in filter(None, splits):  # a foreign or hand-edited file counts as corrupt
        labels_ok = s.labels is None or (s.labels.dtype == torch.int64 and s.labels.shape == s.images.shape[:1])
        if s.images.dtype != torch.uint8 or s.images.shape[1:] != (3, size, size) or not labels_ok:
            return None
    return (splits[0], splits[1], classes, skipped) if splits[0] is not None else None


def write_cache(path: Path, train: Split, test: Split | None, classes: tuple[str, ...],
                skipped: tuple[tuple[str, str], ...] = ()) -> None:  # fmt: skip
    """Write the cache atomically; a failure (full disk, read-only folder) only warns: training goes on."""
    tensors: dict[str, Tensor] = {}
    for part, split in (("train", train), ("test", test)):
        for kind, t in (("images", split and split.images), ("labels", split and split.labels)):
            if t is not None:
                tensors[f"{kind}_{part}"] = t
    try:
        meta = {"classes": json.dumps(list(classes)), "format": str(FORMAT_VERSION), "skipped": json.dumps(skipped)}
        write_atomic(path, tensors, meta)
    except (OSError, SafetensorError) as err:
        warnings.warn(f"decode cache {path} not written ({err}); set data.root to a writable folder", stacklevel=3)
