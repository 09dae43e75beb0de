"""The README's CIFAR-10 study table from one or more `affssl ablate --preset main --match-time` outputs.

A base's rows come from the last results.csv that has them, so a study whose base was re-run under a
revised protocol (`ablate --base B --out OTHER`) can replace that base's rows of the first run. The
statistics are affssl.ablate's, recomputed over the merged rows: one sample per pretraining seed,
mean ± 95 % t-interval, Welch's test, and Holm–Bonferroni across the bases in each comparison column
(+ affine vs base; + affine vs the base given its training time). Not a test.

    python benchmarks/study_table.py results/cifar10-cpu-v2/results.csv [runs/rerun-byol/results.csv]

Prints the table, then the module's effect on R² per component (+ affine − base, Welch 95 % interval,
unadjusted p) per base.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from affssl import stats

KINDS = ("floor", "base", "affine", "equal-time")
COMPONENT_R2 = ("rotation", "translation", "scale", "shear")


def read_bases(paths: list[Path]) -> dict[str, list[dict[str, str]]]:
    """base → its rows, from the last file that has any."""
    bases: dict[str, list[dict[str, str]]] = {}
    for path in paths:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for base in dict.fromkeys(r["base"] for r in rows):
            bases[base] = [r | {"source": str(path)} for r in rows if r["base"] == base]
    return bases


def kind_of(row: dict[str, str]) -> str:
    if row["kind"] in ("floor", "equal-time"):
        return row["kind"]
    return "affine" if row["affine"] == "true" else "base"


def values(rows: list[dict[str, str]], kind: str, column: str) -> list[float]:
    return [float(r[column]) for r in rows if kind_of(r) == kind and r.get(column)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, nargs="+", help="results.csv files; later ones replace a base's rows")
    p.add_argument("--dataset", default="cifar10", help="the metrics' data set suffix (default cifar10)")
    args = p.parse_args(argv)
    lin, knn, r2 = f"linear-{args.dataset}", f"knn-{args.dataset}-k20", f"affine-{args.dataset}-r2"
    bases = read_bases(args.results)
    vs_base = {b: stats.compare(values(r, "affine", lin), values(r, "base", lin)) for b, r in bases.items()}
    vs_equal = {b: stats.compare(values(r, "affine", lin), values(r, "equal-time", lin)) for b, r in bases.items()}
    holm_base = dict(zip(bases, stats.holm([c.p for c in vs_base.values()]), strict=True))
    holm_equal = dict(zip(bases, stats.holm([c.p for c in vs_equal.values()]), strict=True))

    def cell(xs: list[float], digits: int = 2) -> str:
        return f"{stats.fmt(stats.mean(xs), digits)} ± {stats.fmt(stats.ci_half_width(xs), digits)}"

    print("| variant | n | linear top-1 % | Δ vs floor | Δ vs base (Holm p) | Δ vs equal time (Holm p) "
          "| kNN top-1 % | mean R² of φ | train s | epochs | source |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for base, rows in bases.items():
        floor = values(rows, "floor", lin)
        for kind in KINDS:
            acc = values(rows, kind, lin)
            if not acc:
                continue
            gain = stats.compare(acc, floor) if kind != "floor" else None
            over = f"{stats.fmt(gain.gain, signed=True)} ± {stats.fmt(gain.ci95)}" if gain else ""
            a = vs_base[base] if kind == "affine" else None
            e = vs_equal[base] if kind == "affine" else None
            db = f"{stats.fmt(a.gain, signed=True)} ({stats.fmt_p(holm_base[base])})" if a else ""
            de = f"{stats.fmt(e.gain, signed=True)} ({stats.fmt_p(holm_equal[base])})" if e else ""
            epochs = sorted({r["epochs"] for r in rows if kind_of(r) == kind})
            source = sorted({r["source"] for r in rows if kind_of(r) == kind})
            wall_s = stats.fmt(stats.mean(values(rows, kind, "wall_s")), 0)
            print(f"| {base}/{kind} | {len(acc)} | {cell(acc)} | {over} | {db} | {de} "
                  f"| {cell(values(rows, kind, knn))} | {cell(values(rows, kind, r2), 3)} | {wall_s} "
                  f"| {'/'.join(epochs)} | {', '.join(source)} |")  # fmt: skip
    print("\nR² per component, + affine − base (Welch 95 % interval, unadjusted p):")
    for base, rows in bases.items():
        parts = []
        for c in COMPONENT_R2:
            on, off = values(rows, "affine", f"{r2}-{c}"), values(rows, "base", f"{r2}-{c}")
            d = stats.compare(on, off)
            parts.append(f"{c} {stats.fmt(d.gain, 3, signed=True)} ± {stats.fmt(d.ci95, 3)} (p {stats.fmt_p(d.p)})")
        print(f"  {base}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
