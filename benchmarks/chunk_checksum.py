"""What the chunks' per-item CRC-32 check (affssl/data/chunkread.py) costs per epoch. Not a test.

    python benchmarks/chunk_checksum.py DATA [--root CACHE] [--repeats 3]

DATA is an image folder (CIFAR-10's train/ layout); its chunks are written under --root if they are
not there. One process, no loader workers: an epoch's items in the training order (a seeded
permutation, batches of --batch-size), read from the chunks with litdata (bytes only), then the
CRC-32 of each item alone, then the reader's whole batch work as training runs it (read, check,
TorchCodec decode, pad). Medians (min–max) over --repeats; the check's share is of the whole batch work.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine

from affssl.data import chunkread, chunkwrite, storage
from affssl.spec import load_spec


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--root", default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    sets = [f"data.dataset={args.data}", "data.storage=chunks", "data.workers=1"]
    spec = load_spec("default", sets + ([f"data.root={args.root}"] if args.root else []))
    chunks = chunkread.open_chunks(storage.written(spec.data, False))
    order = torch.randperm(chunks.count, generator=torch.Generator().manual_seed(0)).split(args.batch_size)
    reader = chunkread._Reader(chunks.folder, decode=True, cap_px=4 * spec.data.image_size_px)
    ds = reader._open()
    items = [ds[i] for i in range(chunks.count)]  # warm the page cache and litdata's reader
    rows = {"read bytes": [], "CRC-32 check": [], "batch work (read, check, decode, pad)": []}
    for _ in range(args.repeats):
        rows["read bytes"].append(timed(lambda: [ds[i]["jpeg"] for b in order for i in b.tolist()]))
        rows["CRC-32 check"].append(timed(lambda: [chunkwrite.item_crc(it["jpeg"], it["label"]) for it in items]))
        rows["batch work (read, check, decode, pad)"].append(timed(lambda: [reader.__getitems__(b.tolist())
                                                                            for b in order]))  # fmt: skip
    print(machine(torch.device("cpu")))
    print(f"{chunks.count:,} items in {chunks.folder}")
    whole = statistics.median(rows["batch work (read, check, decode, pad)"])
    for name, values in rows.items():
        share = f"  ({statistics.median(values) / whole:.1%} of the batch work)" if name == "CRC-32 check" else ""
        print(f"{name:40s} {statistics.median(values):7.3f} s an epoch ({min(values):.3f}–{max(values):.3f}){share}")


if __name__ == "__main__":
    main()
