"""Training batches from chunk files: litdata's StreamingDataset read by index, decoded by TorchCodec.

Order: the engine draws each epoch's permutation from the run's seeded "order" generator, exactly
as on the tensor storage, and hands this module the batches (each process its slice). A torch
DataLoader reads them through a batch sampler in that order, so the batches do not depend on the
number of loader workers, and a resume from inside an epoch starts the sampler at the first batch
not yet trained. litdata's own shuffle and loader state are not used: the order is the run's,
derived from train.seed and the epoch, and exact under any worker count.

Decoding: on CPU each loader worker reads its batch's JPEG bytes and decodes them with TorchCodec;
on CUDA the workers only read the bytes and the training process decodes the whole batch in one
nvJPEG call (`decode_jpeg(list, device="cuda")`). Either way a batch is whole images zero-padded to
(B, 3, H_max, W_max) uint8 with their (B, 2) sizes (affssl.data.crops).

A chunk file cut short (a copy interrupted, a full disk) is found when the chunks are opened (its
size differs from index.json) or, if it happens later, when a batch cannot be read: both end the run
with one line naming the file and how to rebuild. A flipped byte (a disk or a copy at fault) keeps
the size: every item read is checked against the CRC-32 stored beside it (chunkwrite.item_crc), so
it ends the run the same way instead of training on a changed image. The check reads only the bytes
read anyway; its cost is in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from affssl import cpus
from affssl.data import crops
from affssl.data import workers as loader_workers
from affssl.data.chunkwrite import META, damage, item_crc
from affssl.data.dataset import DataError
from affssl.data.fingerprint import Fingerprint


class ChunkError(DataError):
    """A chunk file that cannot be read; the message names it and how to rebuild."""


@dataclass(frozen=True)
class ChunkSet:
    folder: Path
    count: int  # items (readable images)
    labels: Tensor | None  # (count,) int64; None for unlabelled folders
    classes: tuple[str, ...]
    bad: int  # images skipped while writing
    bad_first: tuple[str, ...]


def open_chunks(folder: Path) -> ChunkSet:
    """The chunk set in folder, after checking its metadata and that every chunk file is whole."""
    if problem := damage(folder):
        raise ChunkError(f"the chunks in {folder} are damaged ({problem}); delete {folder} and run again to "
                         "rebuild them from the source images")  # fmt: skip
    check_files(folder)
    meta = json.loads((folder / META).read_text())
    labels = None if meta["labels"] is None else torch.tensor(meta["labels"], dtype=torch.int64)
    return ChunkSet(folder, meta["count"], labels, tuple(meta["classes"]), meta["bad"], tuple(meta["bad_first"]))


def check_files(folder: Path) -> None:
    """ChunkError naming the first chunk file whose size differs from the one index.json records."""
    index = json.loads((folder / "index.json").read_text())
    for chunk in index["chunks"]:
        path = folder / chunk["filename"]
        size = path.stat().st_size if path.is_file() else -1
        if size != chunk["chunk_bytes"]:
            what = "is missing" if size < 0 else f"has {size:,} bytes, index.json says {chunk['chunk_bytes']:,}"
            raise ChunkError(f"chunk file {path} {what} (truncated or replaced); delete {folder} and run again to "
                             "rebuild the chunks from the source images")  # fmt: skip


def default_workers() -> int:
    """Loader processes per training process: the CPUs the node's processes may use (the affinity mask capped
    by the cgroup quota, as train.threads = auto counts them: affssl.cpus) shared among them, 1 to 8."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, cpus.available(omp=False) // per_node))


class ChunkFeed:
    """Batches of whole images from a chunk set, for the engine (affssl.data.storage)."""

    def __init__(self, chunks: ChunkSet, items: Tensor, device: torch.device, workers: int,
                 seen: Fingerprint | None = None, cap_px: int | None = None):  # fmt: skip
        """`cap_px`: decoded short sides above it are resized to it before a batch is padded (affssl.data.crops)."""
        self.chunks, self.items, self.device, self.workers = chunks, items, device, workers
        self.cap_px = cap_px
        self.count = len(items)  # training images (after data.limit)
        self.fingerprint = seen  # of the source's files (affssl.data.fingerprint)

    def epoch(self, batches: list[Tensor], lo: int, hi: int, skip: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(x (b, 3, H_max, W_max) uint8, sizes (b, 2)) on the device for batches[skip:], rows lo:hi of each."""
        on_device = self.device.type == "cuda"
        sampler = [self.items[b[lo:hi].cpu()].tolist() for b in batches[skip:]]
        reader = _Reader(self.chunks.folder, decode=not on_device, cap_px=self.cap_px)
        loader = DataLoader(reader, batch_sampler=sampler, num_workers=self.workers, collate_fn=_same,
                            pin_memory=on_device, generator=torch.Generator(),  # not the global RNG
                            worker_init_fn=loader_workers.init_fn())  # fmt: skip
        it = iter(loader)
        while True:
            try:
                got = next(it)
            except StopIteration:
                return
            except Exception as err:  # a worker's error arrives re-wrapped with its traceback: say it in one line
                check_files(self.chunks.folder)
                folder = self.chunks.folder
                raise ChunkError(f"a batch could not be read from {folder} ({_first_line(err)}); "
                                 f"delete {folder} and run again to rebuild the chunks") from None  # fmt: skip
            if on_device:  # one batched nvJPEG call for the whole batch
                from torchcodec.decoders import decode_jpeg

                x, sizes = crops.pad(decode_jpeg(got, mode="RGB", device=self.device), self.cap_px)
            else:
                x, sizes = got
            yield x.to(self.device, non_blocking=True), sizes.to(self.device)


class _Reader(torch.utils.data.Dataset):
    """Map-style view of the chunks: a batch of item indices → padded decoded images, or their bytes."""

    def __init__(self, folder: Path, decode: bool, cap_px: int | None = None):
        self.folder, self.decode, self.cap_px, self.dataset = folder, decode, cap_px, None

    def __len__(self) -> int:
        return len(self._open())

    def _open(self):
        if self.dataset is None:  # in the worker: each opens its own reader
            from litdata import StreamingDataset

            # batch_decode=0: deserialize the one item asked for; litdata's auto window (256 items for a bytes
            # leaf) deserialized 256 to return one on a shuffled read (0.5 ms of the 0.6 ms an image took)
            self.dataset = StreamingDataset(str(self.folder), batch_decode=0)
        return self.dataset

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor] | list[Tensor]:
        ds = self._open()
        items = [ds[i] for i in indices]
        for i, item in zip(indices, items, strict=True):
            if item_crc(item["jpeg"], item["label"]) != item["crc"]:
                raise ChunkError(f"item {i} fails its checksum (a flipped byte in its chunk file)")
        raw = [torch.frombuffer(bytearray(item["jpeg"]), dtype=torch.uint8) for item in items]  # (n_i,) each
        if not self.decode:
            return raw
        from torchcodec.decoders import decode_jpeg

        try:
            return crops.pad(decode_jpeg(raw, mode="RGB"), self.cap_px)  # (B, 3, H_max, W_max), (B, 2)
        except RuntimeError as err:
            raise ChunkError(f"an image of items {indices[0]}… cannot be decoded ({_first_line(err)})") from None


def _same(batch):
    return batch


def _first_line(err: Exception) -> str:
    lines = [s for s in str(err).splitlines() if s.strip() and not s.startswith(("Caught ", "Original Traceback"))]
    return lines[-1].strip() if lines else type(err).__name__
