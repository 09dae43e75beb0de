"""Which storage feeds a run (data.storage), and the feed the engine draws its batches from.

    tensor  every image decoded once into a (N, 3, S, S) uint8 cache and held whole on the device
            (affssl.data.load, affssl.data.cache): the fastest path while the set fits
    chunks  JPEG bytes in litdata chunk files (affssl.data.chunkwrite), read and decoded per batch
            (affssl.data.chunkread), crops drawn from each whole stored image (affssl.data.crops)
    auto    tensor when the decoded uint8 set, N × 3 × S × S bytes (N the source's training images),
            fits in AUTO_SHARE of the RAM and, on CUDA, AUTO_SHARE of the device's memory; else chunks.
            sklearn's digits and torchvision's data sets are held in memory anyway: always tensor.

The choice and its reason are printed once (folders only) and the resolved value is stored in the
spec (RUN/spec.json, checkpoints), so a resume reads the same storage. Chunks are written once per
node: global rank 0 first, then the local rank 0 of every other node whose cache folder does not
hold them yet (none, when the nodes share one folder); the other processes wait.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.console import Console
from torch import Tensor

from affssl import distributed
from affssl.data import chunkwrite, crops, fingerprint, imagenet
from affssl.data.batches import stratified
from affssl.data.cache import cache_dir
from affssl.data.dataset import SHOW_BAD, Dataset, skipped_line
from affssl.data.folders import identity, scan_folder
from affssl.data.load import load_dataset
from affssl.data.sources import CALTECH101_SKIP, TORCHVISION, caltech101_folder
from affssl.spec import DataSpec, RunSpec

if TYPE_CHECKING:
    from affssl.data.chunkread import ChunkSet

AUTO_SHARE = 0.5  # of RAM (and of CUDA memory) the decoded set may take for auto to pick tensor
IN_MEMORY = ("digits", *TORCHVISION)


class TensorFeed:
    """The tensor storage: the decoded set on the device, batches by indexing; `data` the loaded set (host)."""

    def __init__(self, data: Dataset, device: torch.device):
        self.data = data
        self.images = data.train.images.to(device)  # (N, C, S, S) uint8, resident for the whole run
        self.count = self.images.shape[0]
        self.fingerprint = data.fingerprint

    def epoch(self, batches: list[Tensor], lo: int, hi: int, skip: int) -> Iterator[tuple[Tensor, None]]:
        for index in batches[skip:]:
            yield self.images[index[lo:hi]], None  # (b, C, S, S) uint8


def prepare(spec: RunSpec, device: torch.device, data: Dataset | None, progress: bool):
    """(spec with data.storage resolved and chunk facts filled in, feed) for this process."""
    storage, reason = resolve(spec.data, device, data)
    choice = f"data.storage {spec.data.storage} → {storage}: {reason}" if reason and distributed.is_main() else ""
    if storage == "tensor":
        said = data is not None  # settle loaded it and said what it skipped
        data = data or load_dataset(spec.data, seed=spec.train.seed, progress=progress)
        _say(choice)  # once the data loaded: an error stays the run's one line
        _say("" if said or not distributed.is_main() else skipped_note(spec, data))
        return _with(spec, storage=storage, **recorded(data)), TensorFeed(data, device)
    from affssl.data.chunkread import ChunkFeed, default_workers, open_chunks

    folder, seen = _write(spec.data, progress)
    chunks = open_chunks(folder)
    check_skips(chunks, spec.data)
    _say(choice)
    items = torch.arange(chunks.count)
    if spec.data.limit is not None and spec.data.limit < chunks.count:  # as affssl.data.batches.subset draws it
        gen = torch.Generator().manual_seed(spec.train.seed)
        if chunks.labels is None:
            items = torch.randperm(chunks.count, generator=gen)[: spec.data.limit].sort().values
        else:
            items = stratified(chunks.labels, spec.data.limit, gen)
    if chunks.bad and distributed.is_main():
        more = " …" if chunks.bad > len(chunks.bad_first) else ""
        _say(f"skipped {chunks.bad} unreadable image(s) of {spec.data.dataset} (data.max_bad_frac "
             f"{spec.data.max_bad_frac:g}): {', '.join(chunks.bad_first)}{more}")  # fmt: skip
    workers = default_workers() if spec.data.workers is None else spec.data.workers
    spec = _with(spec, storage=storage, bad_count=chunks.bad, bad_first=chunks.bad_first)
    return spec, ChunkFeed(chunks, items, device, workers, seen, cap_px=crops.CAP_FACTOR * spec.data.image_size_px)


def settle(spec: RunSpec, device: torch.device, progress: bool) -> tuple[RunSpec, Dataset | None]:
    """Check a run's data before anything of the run is created: (spec with data.storage resolved, the loaded
    set for tensor storage | None for chunks, whose files are then written). The choice is printed here once."""
    storage, reason = resolve(spec.data, device, None)
    if storage == "tensor":
        data = load_dataset(spec.data, seed=spec.train.seed, progress=progress)
    else:
        from affssl.data.chunkread import open_chunks

        data = None
        check_skips(open_chunks(written(spec.data, progress)), spec.data)  # bad images stop the run here
    if reason and distributed.is_main():
        _say(f"data.storage {spec.data.storage} → {storage}: {reason}")
    if data is not None and distributed.is_main():
        _say(skipped_note(spec, data))
    return _with(spec, storage=storage, **({} if data is None else recorded(data))), data


def recorded(data: Dataset) -> dict[str, object]:
    """The data fields a run records about the unreadable images the tensor storage left out (none: unchanged)."""
    if not data.skipped:
        return {}
    return {"bad_count": len(data.skipped), "bad_first": tuple(p for p, _ in data.skipped[:SHOW_BAD])}


def skipped_note(spec: RunSpec, data: Dataset) -> str:
    return skipped_line(data.skipped, spec.data.dataset, spec.data.max_bad_frac) if data.skipped else ""


def check_skips(chunks: ChunkSet, data: DataSpec) -> None:
    """DataError when the images skipped while the chunks were written (by any run, under its own limit)
    are more than this run's data.max_bad_frac allows: the limit holds on every run, not only the writer's."""
    total = chunks.count + chunks.bad
    if chunks.bad > data.max_bad_frac * total:
        more = " …" if chunks.bad > len(chunks.bad_first) else ""
        raise chunkwrite.DataError(
            f"{chunks.bad} of {total} images ({chunks.bad / total:.2%}) of {data.dataset} were skipped as unreadable "
            f"when its chunks were written, more than data.max_bad_frac {data.max_bad_frac:g}: "
            f"{', '.join(chunks.bad_first)}{more}; remove or replace them, or raise data.max_bad_frac"
        )


def filled_in(key: str, planned: object) -> bool:
    """Whether a stored spec's `key` may differ from the planned value: a field the run resolves or fills in."""
    return (key == "data.storage" and planned == "auto") or (key in ("data.bad_count", "data.bad_first")
                                                            and planned in (None, [], ()))  # fmt: skip


def resolve(data: DataSpec, device: torch.device, given: Dataset | None) -> tuple[str, str]:
    """(tensor | chunks, the reason to print: "" when there was no choice to make)."""
    if data.storage == "chunks":
        if data.dataset in IN_MEMORY:
            raise chunkwrite.DataError(
                f'data.storage = "chunks" needs an image folder (--dataset PATH); {data.dataset!r} is loaded in '
                'memory: use data.storage = "tensor" or "auto"'
            )
        chunkwrite.require_litdata()
        return "chunks", ""
    if data.storage == "tensor" or given is not None or data.dataset in IN_MEMORY:
        return "tensor", ""
    n = len(_plan(data)[0])
    need = n * 3 * data.image_size_px**2
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    budgets = [("RAM", ram)]
    if device.type == "cuda":
        budgets.append((torch.cuda.get_device_name(device), torch.cuda.get_device_properties(device).total_memory))
    over = [(name, size) for name, size in budgets if need > AUTO_SHARE * size]
    verdict = torch.tensor(float(bool(over)), device=device)
    chunks = bool(distributed.maximum(verdict).item())  # every process decides the same
    what = f"{n:,} images decoded at {data.image_size_px} px are {need / 2**30:.1f} GiB"
    limits = " and ".join(f"{AUTO_SHARE:.0%} of {name} ({size / 2**30:.0f} GiB)" for name, size in budgets)
    if not chunks:
        return "tensor", f"{what}, within {limits}"
    chunkwrite.require_litdata()
    name, size = over[0] if over else budgets[0]
    return "chunks", f"{what}, more than {AUTO_SHARE:.0%} of {name} ({size / 2**30:.0f} GiB)"


def written(data: DataSpec, progress: bool) -> Path:
    """The chunk folder of this spec's source, written once per node (or once, in a shared folder)."""
    return _write(data, progress)[0]


def _write(data: DataSpec, progress: bool) -> tuple[Path, fingerprint.Fingerprint]:
    """(the chunk folder, written as `written` says, the fingerprint of the files it was written from)."""
    files, labels, classes, plan_folder, seen = _plan(data)
    plan = chunkwrite.Plan(files, labels, classes, plan_folder, data.store_px, data.jpeg_quality, data.max_bad_frac)
    workers = data.workers if data.workers is not None else _writer_workers()
    first = distributed.rank() == 0
    try:
        if first:
            chunkwrite.write(plan, workers, progress)
    finally:
        distributed.barrier()
    try:
        if not first and distributed.local_rank() == 0:  # another node: its own folder, unless shared
            chunkwrite.write(plan, workers, progress)
    finally:
        distributed.barrier()
    return plan.folder, fingerprint.of(*seen)


def _plan(data: DataSpec) -> tuple[list, list[int] | None, tuple[str, ...], Path, tuple[list, int]]:
    """The training files, labels, classes, chunk folder and (identity, count) of a folder source."""
    root = cache_dir(data)
    keep = None if data.classes_file is None else imagenet.read_classes_file(data.classes_file)
    if data.dataset == "caltech101":
        splits, classes, folder = scan_folder(caltech101_folder(root), skip=CALTECH101_SKIP, keep=keep)
    else:
        splits, classes, folder = scan_folder(Path(data.dataset).expanduser(), keep=keep)
    files, labels = splits["train"]
    ids = identity(folder, files)
    key = chunkwrite.chunk_folder(root, str(folder), ids, data.store_px, data.jpeg_quality)
    return files, labels, classes, key, ([str(folder), ids], len(files))


def _say(line: str) -> None:
    if line:
        Console(stderr=True, highlight=False, soft_wrap=True).print(line)


def _writer_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _with(spec: RunSpec, **data: object) -> RunSpec:
    return spec.model_copy(update={"data": spec.data.model_copy(update=data)})
