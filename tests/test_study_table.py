"""benchmarks/study_table.py: a base's rows come from the last results.csv that has them; its p-values are scipy's."""

from __future__ import annotations

import csv
import runpy
from pathlib import Path

import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "study_table.py"
R2 = tuple(f"affine-cifar10-r2-{c}" for c in ("rotation", "translation", "scale", "shear"))
COLUMNS = ("variant", "base", "affine", "kind", "seed", "epochs", "wall_s", "linear-cifar10", "knn-cifar10-k20",
           "affine-cifar10-r2", *R2)  # fmt: skip
KIND = {"floor": ("false", "floor"), "base": ("false", "base"), "affine-all": ("true", "reference"),
        "base-equal-time": ("false", "equal-time")}  # fmt: skip


def write(path: Path, accuracy: dict[tuple[str, str], list[float]]) -> Path:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        for (base, variant), values in accuracy.items():
            affine, kind = KIND[variant]
            for seed, v in enumerate(values):
                fields = [f"{base}/{variant}", base, affine, kind, seed, 4, 100.0, v, v - 3]
                out.writerow([*fields, 0.3, 0.1, 0.5, 0.4, 0.0])
    return path


def study(base_shift: float, bases=("simclr", "byol")) -> dict[tuple[str, str], list[float]]:
    rows = {}
    for i, base in enumerate(bases):
        rows[(base, "floor")] = [21.0, 22.0, 23.0]
        rows[(base, "base")] = [v + base_shift + i for v in (35.0, 36.5, 37.0)]
        rows[(base, "affine-all")] = [v + base_shift + 2 * i for v in (36.0, 38.0, 37.5)]
        rows[(base, "base-equal-time")] = [v + base_shift for v in (36.5, 37.0, 38.5)]
    return rows


def table(capsys, *paths: Path) -> dict[str, list[str]]:
    runpy.run_path(str(SCRIPT))["main"]([str(p) for p in paths])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "/" in line]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def test_a_later_file_replaces_a_base_and_holm_spans_the_bases(tmp_path, capsys):
    first = write(tmp_path / "first.csv", study(0.0))
    rerun = study(5.0, bases=("byol",))
    second = write(tmp_path / "second.csv", rerun)
    rows = table(capsys, first, second)
    assert rows["byol/base"][1].startswith(f"{sum(rerun[('byol', 'base')]) / 3:.2f} ± ")
    assert rows["byol/base"][-1] == str(second) and rows["simclr/base"][-1] == str(first)
    # Oracle: scipy's Welch tests, Holm over the two bases by hand.
    merged = study(0.0) | rerun
    p = {b: stats.ttest_ind(merged[(b, "affine-all")], merged[(b, "base")], equal_var=False).pvalue
         for b in ("simclr", "byol")}  # fmt: skip
    low, high = sorted(p, key=p.get)
    holm = {low: min(1, 2 * p[low])}
    holm[high] = max(holm[low], min(1, p[high]))
    for base in p:
        assert rows[f"{base}/affine"][3].endswith(f"({holm[base]:.2g})")
    floor_gap = sum(rerun[("byol", "base")]) / 3 - 22.0
    assert rows["byol/base"][2].startswith(f"{floor_gap:+.2f} ± ")


@pytest.mark.skipif(not (SCRIPT.parents[1] / "results/cifar10-cpu-v2/results.csv").is_file(), reason="no study")
def test_the_committed_study_reproduces_its_summary(capsys):
    rows = table(capsys, SCRIPT.parents[1] / "results/cifar10-cpu-v2/results.csv")
    summary = (SCRIPT.parents[1] / "results/cifar10-cpu-v2/summary.md").read_text()
    for base in ("simclr", "barlow"):
        line = next(x for x in summary.splitlines() if x.startswith(f"| {base}/affine-all (all) |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert rows[f"{base}/affine"][1] == cells[2]  # mean ± CI
        assert rows[f"{base}/affine"][3] == f"{cells[4].split()[0]} ({cells[6]})"  # Δ vs base (Holm p)
