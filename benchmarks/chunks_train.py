"""Training img/s and peak memory from chunks against the tensor storage, and the bare decode rate. Not a test.

    python benchmarks/chunks_train.py --data /work/cifar10                      # R18 w64 at 32 px, 50,000 images
    python benchmarks/chunks_train.py --data /work/cifar10 --width 16 --image-size 16
    python benchmarks/chunks_train.py --data DIR --epoch --storage chunks       # (c) peak RSS of one whole epoch
    python benchmarks/chunks_train.py --data DIR --device cuda                  # (d) nvJPEG decode + training
    python benchmarks/chunks_train.py --quick                                   # seconds: a generated folder

Each measurement is `affssl pretrain` (SimCLR + affine) in a fresh process, so that peak RSS is that
run's: the training process's own (ru_maxrss) and its largest loader worker's (RUSAGE_CHILDREN).
Storages alternate within each repeat so load from other processes hits both alike; tables show
medians over --repeats. img/s is the median of the run's step lines after the first (worker start-up
and the first batches excluded); --epoch instead trains one whole epoch and reports its img/s.

decode: TorchCodec's decode_jpeg on the folder's first --decode-count files; CPU: one file at a time on
one thread (img/s per core; × the loader workers is what chunks can reach when decoding binds); CUDA:
batches of --batch-size in one nvJPEG call each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine, resolve_device

HERE = Path(__file__).resolve().parent


def child(args: argparse.Namespace) -> None:
    """One run in this process; prints its JSON line."""
    sys.path.insert(0, str(HERE.parent))
    from affssl import runs
    from affssl.engine import pretrain
    from affssl.spec import load_spec

    steps = None if args.epoch else args.steps
    overrides = [f"data.dataset={args.data}", f"data.storage={args.storage[0]}", f"data.root={args.cache}",
                 f"data.image_size_px={args.image_size}", f"backbone.width={args.width}", "train.epochs=1",
                 f"train.batch_size={args.batch_size}", f"train.device={args.device}",
                 f"train.log_every={args.log_every}"]  # fmt: skip
    if steps is not None:
        overrides.append(f"data.limit={steps * args.batch_size}")
    if args.workers is not None:
        overrides.append(f"data.workers={args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(load_spec("default", overrides), Path(tmp) / "run", show_progress=False)
        records = runs.read_metrics(Path(tmp) / "run")
    rates = [r["img_per_s"] for r in records if r["kind"] == "step"][1:]
    epoch = next(r for r in records if r["kind"] == "epoch")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # MiB (Linux: KiB)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**10
    print(json.dumps({"img_per_s": epoch["img_per_s"] if args.epoch or not rates else statistics.median(rates),
                      "peak_rss_mib": own, "worker_peak_rss_mib": workers}))  # fmt: skip


def measure(args: argparse.Namespace, storage: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--storage", storage, *forwarded(args)]
    env = {**os.environ, "PYTHONPATH": f"{HERE.parent}:{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{storage} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def forwarded(args: argparse.Namespace) -> list[str]:
    out = ["--data", str(args.data), "--cache", str(args.cache), "--device", args.device, "--width", str(args.width),
           "--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--log-every", str(args.log_every)]  # fmt: skip
    out += ["--epoch"] if args.epoch else []
    out += ["--workers", str(args.workers)] if args.workers is not None else []
    return out


def decode_rate(folder: Path, count: int, device: torch.device, batch: int) -> float:
    """img/s of TorchCodec's decode_jpeg: one file at a time on one CPU thread, or nvJPEG batches on CUDA."""
    from torchcodec.decoders import decode_jpeg

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:count]
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    if device.type == "cuda":
        decode_jpeg(data[:batch], device=device)  # warm-up: nvJPEG handles
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, len(data), batch):
            decode_jpeg(data[i : i + batch], device=device)
        torch.cuda.synchronize()
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t = time.perf_counter()
        for d in data:
            decode_jpeg(d)
        torch.set_num_threads(threads)
    return len(data) / (time.perf_counter() - t)


def quick_folder(root: Path) -> Path:
    sys.path.insert(0, str(HERE))
    from chunks_write import make_folder

    return make_folder(root / "jpegs", 512, 40)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="image folder (e.g. /work/cifar10); --quick generates one")
    p.add_argument("--cache", type=Path, default=None, help="data.root for both storages (default: a temp folder)")
    p.add_argument("--storage", nargs="+", default=["tensor", "chunks"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="steps per run (data.limit = steps × batch)")
    p.add_argument("--log-every", type=int, default=2)
    p.add_argument("--epoch", action="store_true", help="one whole epoch per run (for peak RSS)")
    p.add_argument("--workers", type=int, default=None, help="data.workers (default: affssl's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--decode-count", type=int, default=2000)
    p.add_argument("--quick", action="store_true", help="a tiny generated folder, width 8, 16 px, 2 repeats")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.data = args.data or quick_folder(Path(tmp))
            args.width, args.image_size, args.batch_size, args.steps, args.repeats = 8, 16, 64, 6, 2
        if args.data is None:
            p.error("--data DIR (or --quick)")
        args.cache = args.cache or Path(tmp) / "cache"
        device = resolve_device(args.device)
        for storage in args.storage:  # write each storage's cache once, untimed
            measure(argparse.Namespace(**{**vars(args), "steps": 1, "epoch": False}), storage)
        results: dict[str, list[dict]] = {s: [] for s in args.storage}
        for _ in range(args.repeats):
            for storage in args.storage:
                results[storage].append(measure(args, storage))
        decode = decode_rate(args.data, args.decode_count, device, args.batch_size)
    summary = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in results.items()}
    print(f"# chunks vs tensor: {machine(device)}")
    print(f"resnet18 width {args.width} at {args.image_size} px, batch {args.batch_size}, "
          f"{'one epoch' if args.epoch else f'{args.steps} steps'}; medians of {args.repeats}")  # fmt: skip
    print("| storage | img/s | peak RSS MiB | largest child process MiB |\n|---|---|---|---|")
    for s, m in summary.items():
        print(f"| {s} | {m['img_per_s']:.0f} | {m['peak_rss_mib']:.0f} | {m['worker_peak_rss_mib']:.0f} |")
    if "tensor" in summary and "chunks" in summary:
        print(f"chunks / tensor: {summary['chunks']['img_per_s'] / summary['tensor']['img_per_s']:.2f}")
    kind = "nvJPEG batches" if device.type == "cuda" else "one CPU thread"
    print(f"decode_jpeg ({kind}): {decode:.0f} img/s")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": results, "decode_img_per_s": decode,
                                         "machine": machine(device), "args": forwarded(args)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
