"""Same science under bf16: the linear-probe accuracy of two `affssl ablate` outputs that differ only in
train.precision, variant by variant. Not a test.

    affssl ablate examples/cifar10_cpu.toml --preset main --base simclr,byol --seeds 3 --dataset data/cifar10 \\
        --eval-limit 4000 --no-floor --set train.precision=fp32 --out runs/prec-fp32      # and =bf16 → runs/prec-bf16
    python benchmarks/precision_study.py runs/prec-fp32/results.csv runs/prec-bf16/results.csv [--out table.md]

Per variant: mean ± 95 % t-interval over pretraining seeds in each precision, the difference
bf16 − fp32 with its Welch 95 % interval, Welch's p, whether 0 lies inside the interval, and the
median training throughput (img/s) of each.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from affssl import stats


def read(path: Path, metric: str) -> dict[str, dict[str, list[float]]]:
    """variant → {"acc": per-seed probe accuracy, "img_per_s": per-seed training rate}."""
    rows: dict[str, dict[str, list[float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get(metric):
                entry = rows.setdefault(row["variant"], {"acc": [], "img_per_s": []})
                entry["acc"].append(float(row[metric]))
                entry["img_per_s"].append(float(row["img_per_s"]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fp32", type=Path, help="results.csv of the fp32 ablation")
    p.add_argument("bf16", type=Path, help="results.csv of the bf16 ablation")
    p.add_argument("--metric", default="linear-cifar10", help="results.csv column (default linear-cifar10)")
    p.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = p.parse_args()
    a, b = read(args.fp32, args.metric), read(args.bf16, args.metric)
    lines = ["| variant | fp32 top-1 % (n) | bf16 top-1 % (n) | bf16 − fp32 (95 % CI) | p | 0 inside "
             "| img/s fp32 → bf16 |", "|---|---:|---:|---:|---:|---|---:|"]  # fmt: skip
    for variant in [v for v in a if v in b]:
        x, y = a[variant]["acc"], b[variant]["acc"]
        diff, half = stats.mean(y) - stats.mean(x), stats.welch_ci(y, x)
        inside = "yes" if abs(diff) <= half else "no"
        rate = f"{statistics.median(a[variant]['img_per_s']):.0f} → {statistics.median(b[variant]['img_per_s']):.0f}"
        lines.append(f"| {variant} | {stats.fmt(stats.mean(x))} ± {stats.fmt(stats.ci_half_width(x))} ({len(x)}) | "
                     f"{stats.fmt(stats.mean(y))} ± {stats.fmt(stats.ci_half_width(y))} ({len(y)}) | "
                     f"{stats.fmt(diff, signed=True)} ± {stats.fmt(half)} | {stats.fmt_p(stats.welch_p(y, x))} | "
                     f"{inside} | {rate} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
