"""Chunk writing img/s and size on disk against the uint8 tensor cache of the same images. Not a test.

    python benchmarks/chunks_write.py --make /tmp/gen100k --count 100000     # (a) generated ~128 px JPEGs
    python benchmarks/chunks_write.py --make /tmp/gen200k --count 200000
    python benchmarks/chunks_write.py --data /work/cifar10 --image-size 32   # an existing folder
    python benchmarks/chunks_write.py --quick                                # seconds: 512 generated images

--make generates the folder once (skipped when it already holds --count images): smooth random
images of 100–160 px a side (about 128 px) in 10 class folders, JPEG quality 90. Each repeat writes
the chunks (data.storage = "chunks", affssl's own writer and its workers) and the tensor cache
(data.storage = "tensor": every image decoded, resized, centre-cropped to --image-size and stored as
uint8) into a fresh cache folder, timed; the table shows medians over --repeats and the bytes on disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def make_folder(root: Path, count: int, max_px: int = 160, seed: int = 0) -> Path:
    """root/train/c<k>/<i>.jpg: count smooth random JPEGs of (max_px·5/8)–max_px px a side; kept if complete."""
    from torchcodec.encoders import JpegEncoder

    if len(list(root.glob("train/*/*.jpg"))) >= count:
        return root
    gen = torch.Generator().manual_seed(seed)
    for i in range(count):
        folder = root / "train" / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = torch.randint(max_px * 5 // 8, max_px + 1, (2,), generator=gen).tolist()
        coarse = torch.rand(1, 3, 6, 6, generator=gen)
        img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
        noise = torch.randint(-8, 9, (3, h, w), generator=gen)
        img = ((img * 255).round() + noise).clamp(0, 255).to(torch.uint8)
        JpegEncoder(img).to_file(str(folder / f"{i:07d}.jpg"), quality=90)
    return root


def size_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_once(
    data: Path, storage: str, image_size: int, store_px: int | None, workers: int | None
) -> tuple[float, int]:
    """(seconds, bytes on disk) to write one storage's files for the folder into a fresh cache."""
    from affssl.data import load_dataset
    from affssl.data import storage as storages
    from affssl.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"data.dataset={data}", f"data.root={tmp}", f"data.image_size_px={image_size}"]
        overrides += [f"data.store_px={store_px}"] if store_px else []
        overrides += [f"data.workers={workers}"] if workers is not None else []
        spec = load_spec("default", overrides).data
        t = time.perf_counter()
        if storage == "chunks":
            storages.written(spec, progress=False)
        else:
            load_dataset(spec)
        return time.perf_counter() - t, size_on_disk(Path(tmp))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="an existing image folder")
    p.add_argument("--make", type=Path, help="generate --count JPEGs here (once) and use them")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--image-size", type=int, default=128, help="the tensor cache's square size (px)")
    p.add_argument("--store-px", type=int, default=None, help="data.store_px for the chunks (default: as found)")
    p.add_argument("--workers", type=int, default=None, help="data.workers while writing chunks")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--make-only", action="store_true", help="generate the --make folder and stop")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.make, args.count, args.repeats = args.make or Path(tmp) / "gen", 512, 2
        data = make_folder(args.make, args.count) if args.make else args.data
        if args.make_only:
            return
        if data is None:
            p.error("--data DIR or --make DIR (or --quick)")
        n = len(list(data.glob("train/*/*"))) or len(list(data.rglob("*.jp*g")))
        results: dict[str, list[tuple[float, int]]] = {"chunks": [], "tensor": []}
        for _ in range(args.repeats):
            for storage in results:
                results[storage].append(write_once(data, storage, args.image_size, args.store_px, args.workers))
    print(f"# writing {n:,} images of {data}; medians of {args.repeats}")
    print("| storage | seconds | img/s | size on disk MiB |\n|---|---|---|---|")
    table = {}
    for storage, runs in results.items():
        s, size = statistics.median(r[0] for r in runs), runs[-1][1]
        table[storage] = {"seconds": s, "img_per_s": n / s, "bytes": size}
        print(f"| {storage} ({'JPEG bytes' if storage == 'chunks' else f'uint8 at {args.image_size} px'}) | "
              f"{s:.1f} | {n / s:.0f} | {size / 2**20:.1f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"images": n, "table": table, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
