"""Ranks share data: cached images are a memory map of the cache file, decoded once per node."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from affssl.data import load_dataset, sources
from affssl.spec import DataSpec


def mapped_file(t: torch.Tensor) -> str | None:
    """The file whose memory map holds the tensor's data (None: anonymous memory), from /proc/self/maps."""
    ptr = t.data_ptr()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if start <= ptr < end:
                return parts[5] if len(parts) > 5 else None
    return None


@pytest.fixture
def image_folder(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / "img" / c / f"{i}.png")
    return tmp_path / "img"


def test_cached_images_are_a_map_of_the_cache_file_not_a_copy(tmp_path):
    spec = DataSpec(root=tmp_path, image_size_px=16)
    first = load_dataset(spec)  # decodes, writes the cache, then maps it
    [cache] = (tmp_path / "decoded").glob("*.safetensors")
    again = load_dataset(spec)
    for d in (first, again):
        assert mapped_file(d.train.images) == str(cache) and mapped_file(d.test.images) == str(cache)
        assert d.train.labels.dtype == torch.int64 and mapped_file(d.train.labels) != str(cache)  # labels: copied
    assert torch.equal(first.train.images, again.train.images)
    again.train.images[0, 0, 0, 0] += 1  # copy-on-write: the file and other maps keep their bytes
    assert torch.equal(load_dataset(spec).train.images, first.train.images)


def test_no_cache_keeps_decoded_memory(tmp_path):
    loaded = load_dataset(DataSpec(root=tmp_path, image_size_px=16, cache=False))
    assert not (mapped_file(loaded.train.images) or "").endswith(".safetensors")  # anonymous memory
    assert not (tmp_path / "decoded").exists()


def _rank(rank: int, folder: str, images: str) -> None:
    os.environ |= {"LOCAL_RANK": str(rank), "AFFSSL_CACHE": f"{folder}/cache"}
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))  # fmt: skip
    try:
        decode = sources.decode_files

        def counted(*args, **kwargs):
            with open(f"{folder}/decoded-by", "a") as f:
                f.write(f"{rank}\n")
            return decode(*args, **kwargs)

        sources.decode_files = counted
        loaded = load_dataset(DataSpec(dataset=images, image_size_px=8))
        Path(f"{folder}/rank{rank}.txt").write_text(
            f"{mapped_file(loaded.train.images)}\n{int(loaded.train.images.sum())}"
        )
    finally:
        dist.destroy_process_group()


def test_two_ranks_decode_once_and_map_the_same_file(tmp_path, image_folder, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    mp.start_processes(_rank, args=(str(tmp_path), str(image_folder)), nprocs=2, start_method="fork")
    assert (tmp_path / "decoded-by").read_text() == "0\n"  # local rank 0 decoded; rank 1 waited, then mapped
    [cache] = (tmp_path / "cache" / "decoded").glob("*.safetensors")
    reports = [(tmp_path / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    assert reports[0] == reports[1] and reports[0][0] == str(cache)
