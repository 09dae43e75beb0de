"""The online monitor's images on chunk storage: the rows it picks, decoded once as the tensor cache decodes them.

On the tensor storage the monitor indexes the decoded splits in memory (affssl.monitor.pick). On chunks no
decoded set is in memory, so the few thousand rows the monitor picks (affssl.monitor.choose, the same rules
on the same labels) are decoded once at the run's start into (n, 3, S, S) uint8 on the host, through the
tensor cache's own transform (affssl.data.decode.square_into: short side to S, antialiased, centre crop):

- training rows from the chunk files, read and decoded in batches by the training feed's loader workers
  (affssl.data.chunkread.ChunkFeed), on the CPU also on CUDA so the pixels are those of the CPU decoder.
  A JPEG stored as its own bytes (data.store_px unset, the default, or above its short side) decodes to
  the tensor cache's pixels exactly; an image the chunks hold resized or re-encoded is scored as stored,
  as training sees it;
- test rows from the source folder's test split (only the training split is written as chunks), found
  as affssl.data.folders finds it for the tensor storage and read by decode_files, the tensor cache's
  reader. An unreadable test image (the tensor storage would stop on it) is left out of the queries.

Each process decodes the rows itself: the work is deterministic, each process uses its own share of the
node's CPUs (its loader workers), so the wall time is that of one process decoding with all of them, and
no (n, 3, S, S) tensor (1.5 GB for 10,000 images at 224 px) crosses a process group.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor

from affssl.data import imagenet
from affssl.data.chunkread import ChunkFeed
from affssl.data.decode import Entry, decode_files, square_into
from affssl.data.folders import scan_test
from affssl.spec import DataSpec


def find_test_split(data: DataSpec, classes: tuple[str, ...]) -> tuple[list[Entry], Tensor] | None:
    """The labelled test split the tensor storage would load for this folder: (files, labels (m,) int64), or None."""
    if data.dataset == "caltech101" or not classes:  # caltech101 is one class folder; unlabelled: no labels
        return None
    keep = None if data.classes_file is None else imagenet.read_classes_file(data.classes_file)
    found = scan_test(Path(data.dataset).expanduser(), classes, keep=keep)
    if found is None or found[1] is None or not found[0]:
        return None
    return found[0], torch.tensor(found[1], dtype=torch.int64)


def decode(feed: ChunkFeed, size: int, bank: Tensor, queries: Tensor, test_files: list[Entry] | None, batch: int,
           progress: bool) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """The bank's training rows (N,) and the queries' rows (M,) → (N, 3, S, S) and (M', 3, S, S) uint8, kept (M,) bool.

    The queries are rows of the test split's files, or, with test_files None, training rows held out of the bank.
    """
    with Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar:
        advance = partial(
            bar.advance, bar.add_task("decoding the online monitor's images", total=len(bank) + len(queries))
        )
        if test_files is not None:
            return (decode_training_rows(feed, bank, size, batch, advance),
                    *decode_test_rows(test_files, queries, size, advance))  # fmt: skip
        both = decode_training_rows(feed, torch.cat([bank, queries]), size, batch, advance)  # (N + M, 3, S, S)
        return both[: len(bank)], both[len(bank) :], torch.ones(len(queries), dtype=torch.bool)


def decode_training_rows(
    feed: ChunkFeed, rows: Tensor, size: int, batch: int, advance: Callable[[int], None]
) -> Tensor:
    """Rows (n,) of the feed's training items → (n, 3, S, S) uint8, decoded on the CPU by the feed's loader workers."""
    reader = ChunkFeed(feed.chunks, feed.items, torch.device("cpu"), feed.workers, cap_px=feed.cap_px)
    out = torch.empty(len(rows), 3, size, size, dtype=torch.uint8)  # (n, 3, S, S)
    start = 0
    for x, sizes in reader.epoch(list(rows.split(batch)), 0, batch, 0):  # x (b, 3, H_max, W_max), sizes (b, 2)
        whole = [x[i, :, :h, :w] for i, (h, w) in enumerate(sizes.tolist())]  # (3, h_i, w_i) each, views
        square_into(whole, out[start : start + len(whole)])
        start += len(whole)
        advance(len(whole))
    return out


def decode_test_rows(
    files: list[Entry], rows: Tensor, size: int, advance: Callable[[int], None]
) -> tuple[Tensor, Tensor]:
    """Rows (m,) of the test split's files → ((m', 3, S, S) uint8, kept (m,) bool): unreadable files left out."""
    picked = [files[i] for i in rows.tolist()]
    failures: list[tuple[str, str]] = []
    images = decode_files(picked, size, failures, advance)  # (m, 3, S, S)
    bad = {path for path, _ in failures}
    kept = torch.tensor([path not in bad for path, _, _ in picked], dtype=torch.bool)  # (m,)
    return images[kept], kept
