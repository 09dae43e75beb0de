"""Image decoding for the tensor cache: affssl's `decode_bytes` against bare TorchCodec and torchvision.

    python benchmarks/decode_speed.py --data /work/cifar10 --files 5000 --repeats 5

One thread (`torch.set_num_threads(1)`), the JPEG files of `--data` (sorted, the first `--files`)
read into memory once; each repeat times the three decoders in turn over all of them, so load
from other processes hits them alike, and the table shows medians in images per second.
`decode_bytes` adds its Exif check and PIL fallback to TorchCodec's `decode_jpeg`; torchvision's
(deprecated) `decode_jpeg` is what the cache used before. Every repeat also checks that the
pixels are the same three ways, or the script fails. Prints a markdown table. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from _common import machine
from torchcodec.decoders import decode_jpeg

from affssl.data.decode import decode_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a folder holding *.jpg files (searched recursively)")
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as torchvision_jpeg

    files = sorted(args.data.rglob("*.jpg"))[: args.files]
    if not files:
        sys.exit(f"no *.jpg under {args.data}")
    blobs = [bytearray(f.read_bytes()) for f in files]
    raw = [torch.frombuffer(b, dtype=torch.uint8) for b in blobs]
    decoders = {
        "affssl decode_bytes (TorchCodec)": lambda: [decode_bytes(b) for b in blobs],
        "bare torchcodec decode_jpeg": lambda: [decode_jpeg(t, mode="RGB") for t in raw],
        "torchvision decode_jpeg (list)": lambda: torchvision_jpeg(raw, mode=ImageReadMode.RGB),
    }
    rates: dict[str, list[float]] = {name: [] for name in decoders}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for _ in range(args.repeats):
            outputs = []
            for name, decode in decoders.items():
                t0 = time.perf_counter()
                outputs.append(decode())
                rates[name].append(len(blobs) / (time.perf_counter() - t0))
            if not all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(*outputs, strict=True)):
                sys.exit("the decoders' pixels differ")
    print(f"{len(blobs)} JPEGs from {args.data}, {args.repeats} repeats; {machine(torch.device('cpu'))}\n")
    print("| decoder | img/s (median) |\n|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):,.0f} |")


if __name__ == "__main__":
    main()
