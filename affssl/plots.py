"""Plots of an ablation, as PNG files (matplotlib's Agg canvas through `Figure`; no pyplot state).

- `plot_variants`: the metric per variant, mean with its 95 % t-interval, every sample as a dot.
- `plot_cost`: final metric against training seconds per run (the price of each variant).
- `plot_curves`: linear-probe accuracy against epoch and against training wall-clock seconds, from
  the periodic checkpoints (`--curve`); the paper's "efficiency" claim (§3.2) is about this view.
  Baselines are dashed, as in the paper's figure.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from affssl.ablate_results import Row, VariantStats, unit_label
from affssl.stats import ci_half_width, mean

DPI = 120


def _colour(i: int) -> str:
    return f"C{i % 10}"


def plot_variants(metric: str, stats: list[VariantStats], path: Path) -> Path:
    fig = Figure(figsize=(7.5, 1.2 + 0.42 * len(stats)))
    ax = fig.subplots()
    bases = list(dict.fromkeys(s.variant.base for s in stats))
    for i, s in enumerate(stats):
        colour = _colour(bases.index(s.variant.base))
        ci = 0.0 if math.isnan(s.summary.ci95) else s.summary.ci95
        ax.errorbar(s.summary.mean, i, xerr=ci, fmt="D" if s.variant.baseline else "o", color=colour, capsize=4)
        ax.scatter(s.values, [i] * len(s.values), s=10, color=colour, alpha=0.35, linewidths=0)
    ax.set_yticks(range(len(stats)), [s.variant.name for s in stats])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric}: {unit_label(metric)} (mean ± 95 % CI; dots: samples)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def plot_cost(metric: str, stats: list[VariantStats], path: Path) -> Path:
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    bases = list(dict.fromkeys(s.variant.base for s in stats))
    for s in stats:
        ci = 0.0 if math.isnan(s.summary.ci95) else s.summary.ci95
        colour = _colour(bases.index(s.variant.base))
        ax.errorbar(s.wall_s, s.summary.mean, yerr=ci, fmt="D" if s.variant.baseline else "o", color=colour, capsize=4)
        ax.annotate(s.variant.name, (s.wall_s, s.summary.mean), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("training seconds per run (mean)")
    ax.set_ylabel(f"{metric}: {unit_label(metric)}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def curve_means(rows: list[Row]) -> list[tuple[int, float, float, float]]:
    """(epoch, mean wall seconds, mean value, CI half-width or NaN) over a variant's seeds."""
    epochs = sorted({p.epoch for r in rows for p in r.curve})
    out = []
    for e in epochs:
        points = [p for r in rows for p in r.curve if p.epoch == e]
        values = [p.value for p in points]
        out.append((e, mean([p.wall_s for p in points]), mean(values), ci_half_width(values)))
    return out


def plot_curves(metric: str, rows: list[Row], path: Path) -> Path | None:
    """Accuracy against epoch and against training seconds; None when no run has a curve."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        if r.curve:
            groups.setdefault(r.variant.name, []).append(r)
    if not groups:
        return None
    fig = Figure(figsize=(12, 5))
    by_epoch, by_time = fig.subplots(1, 2, sharey=True)
    for i, (name, rs) in enumerate(groups.items()):
        points = curve_means(rs)
        style = "--" if rs[0].variant.baseline else "-"
        for ax, x in ((by_epoch, [p[0] for p in points]), (by_time, [p[1] for p in points])):
            y = [p[2] for p in points]
            ax.plot(x, y, style, marker="o", markersize=3, color=_colour(i), label=name)
            ci = [0.0 if math.isnan(p[3]) else p[3] for p in points]
            ax.fill_between(
                x,
                [a - c for a, c in zip(y, ci, strict=True)],
                [a + c for a, c in zip(y, ci, strict=True)],
                color=_colour(i),
                alpha=0.15,
                linewidth=0,
            )
    by_epoch.set_xlabel("pretraining epoch")
    by_time.set_xlabel("training wall-clock seconds")
    by_epoch.set_ylabel(f"{metric}: {unit_label(metric)} (band: 95 % CI over seeds)")
    for ax in (by_epoch, by_time):
        ax.grid(alpha=0.3)
    by_time.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
