"""Plots of an ablation, as PNG files (matplotlib's Agg canvas through `Figure`; no pyplot state).

- `plot_variants`: the metric per variant, mean with its 95 % t-interval, every sample as a dot.
- `plot_cost`: final metric against training seconds per run (the price of each variant).
- `plot_curves`: linear-probe accuracy against epoch and against training wall-clock seconds, from
  the periodic checkpoints (`--curve`), one row of panels per base (± module, the equal-time base,
  the floor as a dotted line); the paper's "efficiency" claim (§3.2) is about this view.
  Baselines are dashed, as in the paper's figure.
- `plot_r2`: the equivariance probe's R² per component, base vs + affine, with 95 % intervals.
- `plot_tradeoff`: linear-probe accuracy against each equivariance summary of the profile (mean affine R²,
  AugSelf's Δ R², rotation accuracy), one marker per variant with its 95 % intervals over seeds on both axes.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from affssl.ablate.results import ComponentEffect, Row, VariantStats, unit_label
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


def curve_means(rows: list[Row], start: list[float] | None = None) -> list[tuple[int, float, float, float, int]]:
    """(epoch, mean wall seconds, mean value, CI half-width or NaN, n) over a variant's seeds.

    `start`: the floor's values (the same initial weights, BatchNorm settled), the curve's epoch 0 at 0 s.
    """
    epochs = sorted({p.epoch for r in rows for p in r.curve})
    out = [(0, 0.0, mean(start), ci_half_width(start), len(start))] if start else []
    for e in epochs:
        points = [p for r in rows for p in r.curve if p.epoch == e]
        values = [p.value for p in points]
        out.append((e, mean([p.wall_s for p in points]), mean(values), ci_half_width(values), len(points)))
    return out


def plot_curves(metric: str, rows: list[Row], path: Path) -> Path | None:
    """Per base (one row of panels): accuracy against epoch and against training seconds, every variant
    with a curve (the equal-time base included), each starting at epoch 0 from the floor when the study
    has one (the floor is the runs' initial weights); the floor also as a dotted line. A variant whose
    seeds ran different epochs (equal time) is a line through the epochs every seed reached, with the
    other points as single markers. None when no run has a curve."""
    bases = list(dict.fromkeys(r.variant.base for r in rows if r.curve))
    if not bases:
        return None
    fig = Figure(figsize=(12, 4.5 * len(bases)))
    panels = fig.subplots(len(bases), 2, sharey="row", squeeze=False)
    for (by_epoch, by_time), base in zip(panels, bases, strict=True):
        floor = [r.metrics[metric] for r in rows if r.variant.kind == "floor" and r.variant.base == base
                 and metric in r.metrics]  # fmt: skip
        groups: dict[str, list[Row]] = {}
        for r in rows:
            if r.curve and r.variant.base == base:
                groups.setdefault(r.variant.name, []).append(r)
        for i, (name, rs) in enumerate(groups.items()):
            points = curve_means(rs, floor)
            full = [p for p in points if p[4] == len(rs) or p[0] == 0]
            partial = [p for p in points if p not in full]
            style = "--" if rs[0].variant.baseline else "-"
            for ax, k in ((by_epoch, 0), (by_time, 1)):
                x, y = [p[k] for p in full], [p[2] for p in full]
                ax.plot(x, y, style, marker="o", markersize=3, color=_colour(i), label=name)
                ci = [0.0 if math.isnan(p[3]) else p[3] for p in full]
                ax.fill_between(x, [a - c for a, c in zip(y, ci, strict=True)],
                                [a + c for a, c in zip(y, ci, strict=True)], color=_colour(i), alpha=0.15,
                                linewidth=0)  # fmt: skip
                if partial:
                    ax.plot([p[k] for p in partial], [p[2] for p in partial], "x", color=_colour(i))
        for ax in (by_epoch, by_time):
            if floor:
                ax.axhline(mean(floor), linestyle=":", color="grey", label=f"{base}/floor (untrained)")
            ax.grid(alpha=0.3)
        by_epoch.set_ylabel(f"{base}: {metric}, {unit_label(metric)}\n(band: 95 % CI over seeds)")
        by_time.legend(fontsize=7, loc="lower right")
    panels[-1][0].set_xlabel("pretraining epoch (× : reached by some seeds only)")
    panels[-1][1].set_xlabel("training wall-clock seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def plot_r2(stem: str, effects: list[ComponentEffect], path: Path) -> Path | None:
    """R² per component, base vs + affine (all), mean with 95 % CI bars, one panel per base."""
    bases = list(dict.fromkeys(e[0] for e in effects))
    if not bases:
        return None
    fig = Figure(figsize=(4 + 3.5 * len(bases), 4.5))
    axes = fig.subplots(1, len(bases), sharey=True, squeeze=False)[0]
    for ax, base in zip(axes, bases, strict=True):
        mine = [e for e in effects if e[0] == base]
        x = list(range(len(mine)))
        for k, (label, pick) in enumerate((("base", 2), ("+ affine (all)", 3))):
            heights = [e[pick].mean for e in mine]
            errors = [0.0 if math.isnan(e[pick].ci95) else e[pick].ci95 for e in mine]
            ax.bar([v + (k - 0.5) * 0.38 for v in x], heights, 0.38, yerr=errors, capsize=3, color=_colour(k),
                   label=label)  # fmt: skip
        ax.set_xticks(x, [e[1] for e in mine])
        ax.set_title(base)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{stem}: R² per component (mean ± 95 % CI)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def plot_tradeoff(linear: list[VariantStats], profile: dict[str, list[VariantStats]], path: Path) -> Path | None:
    """Invariance against equivariance: per equivariance metric a panel, the variant's linear accuracy (y)
    against that metric (x), means with 95 % CI bars over seeds on both axes; baselines as diamonds.
    `linear`: the linear probe's stats; `profile`: equivariance metric → its stats. None without both."""
    accuracy = {s.variant.name: s for s in linear}
    panels = {m: [(s, accuracy[s.variant.name]) for s in stats if s.variant.name in accuracy]
              for m, stats in profile.items()}  # fmt: skip
    panels = {m: pairs for m, pairs in panels.items() if pairs}
    if not panels:
        return None
    fig = Figure(figsize=(4.5 * len(panels), 4.8))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    names = list(dict.fromkeys(s.variant.name for pairs in panels.values() for s, _ in pairs))
    for ax, (metric, pairs) in zip(axes, panels.items(), strict=True):
        for x, y in pairs:
            i = names.index(x.variant.name)
            ci = [0.0 if math.isnan(c) else c for c in (x.summary.ci95, y.summary.ci95)]
            ax.errorbar(x.summary.mean, y.summary.mean, xerr=ci[0], yerr=ci[1], fmt="D" if x.variant.baseline else "o",
                        color=_colour(i), capsize=3, label=x.variant.name)  # fmt: skip
        ax.set_xlabel(f"{metric}\n{unit_label(metric)}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("linear probe: top-1 % (mean ± 95 % CI over seeds)")
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
