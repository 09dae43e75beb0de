"""An ablation's summary: summary.md and the terminal's rich tables, from ablate.results' statistics.

Per metric, one row per variant: mean ± 95 % CI, the gain over the untrained encoder (floor) with
its Welch 95 % interval, the gain over the base with Welch's p and its
Holm-adjusted value, with --match-time the reference's gain over the equal-time base (Holm p), the
gain over the reference, and training cost. The floor rows (untrained encoder) carry no comparison.
Then, when the equivariance probe ran, the module's effect on R² per component with its Welch 95 %
interval, and the time ratios that set the equal-time runs' epochs. On the objectives axis, each
+ objective variant's measured seconds per step relative to its base, and every variant's equivariance
profile (affine R², AugSelf's Δ R², rotation accuracy) side by side.
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.table import Table

from affssl.ablate.planning import Ablation, PlannedRun
from affssl.ablate.results import Row, Unit, VariantStats, component_r2, head_names, is_r2, unit_label
from affssl.stats import Comparison, fmt, fmt_p, summarize

BASE_COLUMNS = (
    "variant",
    "n",
    "mean ± 95 % CI",
    "Δ vs floor ± 95 % CI",
    "Δ vs base (rel.)",
    "p vs base",
    "Holm p vs base",
)
EQUAL_COLUMNS = ("Δ vs equal time (rel.)", "Holm p vs equal time")
TAIL_COLUMNS = ("Δ vs all (rel.)", "p vs all", "train s", "img/s")
COST_COLUMNS = ("s/step vs base",)  # the objectives axis: measured cost of a step, relative to the base's
PROFILE = "equivariance-"  # the equivariance profile's metrics (affssl.ablate.results)


def digits_of(metric: str) -> int:
    return 3 if is_r2(metric) else 2


def cost_cell(s: VariantStats) -> str:
    return "—" if s.step_cost_rel != s.step_cost_rel else f"{s.step_cost_rel:.2f}×"  # NaN: the base, the floor


def name_of(s: VariantStats, mark: str = " (all)") -> str:
    return s.variant.name + (mark if s.variant.reference else "")


def cells(s: VariantStats, digits: int = 2, equal: bool = False, cost: bool = False) -> list[str]:
    def delta(c: Comparison | None) -> str:
        return "—" if c is None else f"{fmt(c.gain, digits, signed=True)} ({fmt(100 * c.relative, 1, signed=True)} %)"

    mean = f"{fmt(s.summary.mean, digits)} ± {fmt(s.summary.ci95, digits)}"
    f = s.vs_floor
    floor = "—" if f is None else f"{fmt(f.gain, digits, signed=True)} ± {fmt(f.ci95, digits)}"
    row = [name_of(s), str(s.summary.n), mean, floor, delta(s.vs_base), fmt_p(s.vs_base.p) if s.vs_base else "—",
           fmt_p(s.p_holm_base)]  # fmt: skip
    if equal:
        row += [delta(s.vs_equal), fmt_p(s.p_holm_equal)]
    img_s = "—" if s.variant.kind == "floor" else f"{s.img_per_s:.0f}"
    tail = [delta(s.vs_ref), fmt_p(s.vs_ref.p) if s.vs_ref else "—", f"{s.wall_s:.1f}", img_s]
    return [*row, *tail, *([cost_cell(s)] if cost else [])]


def _table(header: tuple[str, ...], body: list[list[str]]) -> list[str]:
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(r) + " |" for r in body)]


def write_summary(path: Path, ablation: Ablation, tables: dict[str, list[VariantStats]], unit: Unit, n_runs: int,
                  n_planned: int, rows: list[Row] = (), planned: list[PlannedRun] = ()) -> Path:  # fmt: skip
    ev = ablation.eval
    axes = "; ".join(f"{a} {','.join(v)}" for a, v in ablation.axes) or "—"
    objectives = bool(ablation.objectives)
    study = (f"objectives: {', '.join(ablation.objectives)}" if objectives else
             f"components: {', '.join(ablation.components)} ({ablation.subsets}); axes: {axes}")  # fmt: skip
    versus = (
        "- vs base: against the same base method with every objective off; vs all: not used on the objectives axis"
        if objectives
        else "- vs base: against the same base method without the affine module; vs all: against the variant with "
        "all listed components and each axis at its first value, marked (all)"
    )
    family = (
        "every + objective variant vs its base; every + objective variant vs its own equal-time base"
        if objectives
        else "every + affine variant vs its base; every (all) variant vs its equal-time base"
    )
    sample = (
        "one value per pretraining seed (the run's mean over its probe trials)"
        if unit == "seed"
        else "every linear-probe trial of every run (paper §2.4: repeated probes of one checkpoint)"
    )
    lines = [
        f"# Ablation{f' — preset {ablation.preset}' if ablation.preset else ''}",
        "",
        f"- bases: {', '.join(ablation.bases)}; {study}; seeds: {', '.join(map(str, ablation.seeds))}",
        f"- evaluation: {', '.join(ev.protocols)}; linear-probe trials {ev.trials}; probe limit {ev.limit or '—'}",
        f"- runs finished: {n_runs} of {n_planned}",
        f"- samples: {sample}",
        "- mean ± half-width of the two-sided 95 % Student-t interval; p: Welch's two-sided t-test "
        "(scipy.stats.ttest_ind, equal_var=False); Δ: difference of means, relative gain in parentheses",
        versus,
        f"- Holm p: Holm–Bonferroni adjusted over the family of its column ({family})",
        "- —: not computable (fewer than two samples, or no spread on either side)",
    ]
    if ablation.floor:
        lines.append("- <base>/floor: the untrained encoder of the base's spec and seeds (BatchNorm statistics "
                     "settled on ≤ 2,000 training images; affssl.floor): the score of training nothing; "
                     "Δ vs floor: a variant's gain over it, ± the Welch 95 % interval")  # fmt: skip
    if objectives:
        lines.append(f"- objectives axis: {', '.join(ablation.objectives)}; <base>/<objective> is the base with that "
                     "objective on (its paper's defaults and λ), <base>/base has every objective off; vs base and "
                     "its Holm family: every + objective variant; s/step vs base: measured seconds per training "
                     "step (batch / img/s) over the base's")  # fmt: skip
    if ablation.match_time and objectives:
        lines.append("- <base>/base-equal-time-<objective>: the base trained for round(epochs × t_objective / "
                     "t_base) epochs, t: measured training seconds of the base and that objective's run of a seed; "
                     "vs equal time: each + objective variant against its own")  # fmt: skip
    elif ablation.match_time:
        lines.append("- <base>/base-equal-time: the base trained for round(epochs × t_affine / t_base) epochs, "
                     "t: measured training seconds of the base and the (all) + affine run of a seed")  # fmt: skip
    equal = ablation.match_time
    header = BASE_COLUMNS + (EQUAL_COLUMNS if equal else ()) + TAIL_COLUMNS + (COST_COLUMNS if objectives else ())
    for metric, stats in tables.items():
        lines += ["", f"## {metric} ({unit_label(metric)})", ""]
        lines += _table(header, [cells(s, digits_of(metric), equal, objectives) for s in stats])
    lines += profile_table(list(rows), list(planned))
    lines += heads_table(list(rows), list(planned))
    stems = [m.removesuffix("-r2") for m in tables if m.startswith("affine-") and m.endswith("-r2")]
    for stem in stems:
        effects = component_r2(list(planned), list(rows), stem)
        if effects:
            lines += ["", f"## {stem}: R² per component, base vs + affine (all) (one value per run)", ""]
            body = [[b, c, f"{fmt(x.mean, 3)} ± {fmt(x.ci95, 3)}", f"{fmt(y.mean, 3)} ± {fmt(y.ci95, 3)}",
                     f"{fmt(d.gain, 3, signed=True)} ± {fmt(d.ci95, 3)}", fmt_p(d.p)]
                    for b, c, x, y, d in effects]  # fmt: skip
            lines += _table(("base", "component", "base R²", "+ affine R²", "Δ ± Welch 95 % CI", "p"), body)
    matched = [r for r in rows if r.variant.kind == "equal-time"]
    if matched:
        lines += ["", "## Equal-time runs", ""]
        body = [[r.variant.name, str(r.seed), r.spec_fields["time_ratio"] or "—", r.spec_fields["epochs"],
                 f"{r.wall_s:.1f}"] for r in matched]  # fmt: skip
        ratio = "time ratio t_objective / t_base" if objectives else "time ratio t_affine / t_base"
        lines += _table(("variant", "seed", ratio, "epochs", "train s"), body)
    path.write_text("\n".join(lines) + "\n")
    return path


def profile_table(rows: list[Row], planned: list[PlannedRun]) -> list[str]:
    """Every variant's equivariance profile, one column per quantity (mean ± 95 % CI over its runs)."""
    metrics = list(dict.fromkeys(m for r in rows for m in r.metrics if m.startswith(PROFILE)))
    if not metrics:
        return []
    body = []
    for name in dict.fromkeys(r.variant.name for r in planned):
        mine = [r for r in rows if r.variant.name == name]
        if mine:
            values = [summarize([r.metrics[m] for r in mine if m in r.metrics]) for m in metrics]
            body.append([name, str(len(mine)), *(f"{fmt(v.mean, digits_of(m))} ± {fmt(v.ci95, digits_of(m))}"
                                                 for v, m in zip(values, metrics, strict=True))])  # fmt: skip
    header = ("variant", "n", *(m.removeprefix(PROFILE) for m in metrics))
    note = ("affine-r2: mean R² over components (then each); crop-r2, colour-r2: AugSelf's Δ, mean R² over its 4 "
            "columns; rotation-acc: 4-way rotation top-1 % (chance 25); mean ± 95 % CI over runs")  # fmt: skip
    return ["", "## Equivariance profile (affssl eval equivariance)", "", note, "", *_table(header, body)]


def heads_table(rows: list[Row], planned: list[PlannedRun]) -> list[str]:
    """Every variant's own heads scored as trained: is each objective's task learned? (mean ± 95 % CI over runs)."""
    names = head_names(rows)
    if not names:
        return []
    body = []
    for name in dict.fromkeys(r.variant.name for r in planned):
        mine = [r for r in rows if r.variant.name == name and r.heads]
        if mine:
            cells = []
            for m in names:
                values = [r.heads[m] for r in mine if m in r.heads]
                v = summarize(values) if values else None
                cells.append("—" if v is None else f"{fmt(v.mean, digits_of(m))} ± {fmt(v.ci95, digits_of(m))}")
            body.append([name, str(len(mine)), *cells])
    stem = names[0][: names[0].index("-head-") + len("-head-")]
    header = ("variant", "n", *(m.removeprefix(stem) for m in names))
    note = ("Each trained head on held-out test images with the encoder as it is trained (every set of images in "
            "batches of the training batch size, normalised by its own statistics; affssl.batchstats): "
            "affine-r2-<component>: R² of φ; crop-r2, colour-r2: AugSelf's Δ; rotation-acc: E-SSL's head on its "
            "own small views, 4-way top-1 % (chance 25). CARE has no head. Mean ± 95 % CI over runs.")  # fmt: skip
    return ["", "## Own heads, as trained (affssl eval equivariance)", "", note, "", *_table(header, body)]


def rich_table(metric: str, stats: list[VariantStats]) -> Table:
    """The terminal's view: mean ± CI, relative gains in %, Welch p (Holm); numbers are never truncated."""
    digits = digits_of(metric)
    equal = any(s.vs_equal is not None for s in stats)
    cost = any(s.variant.objective for s in stats)

    def rel(c: Comparison | None) -> str:
        return "—" if c is None else f"{fmt(100 * c.relative, 1, signed=True)}%"

    rows = []
    for s in stats:
        mean = f"{fmt(s.summary.mean, digits)} ± {fmt(s.summary.ci95, digits)}"
        p_base, p_ref = (fmt_p(c.p) if c else "—" for c in (s.vs_base, s.vs_ref))
        floor = "—" if s.vs_floor is None else fmt(s.vs_floor.gain, digits, signed=True)
        row = [name_of(s, "*"), str(s.summary.n), mean, floor, rel(s.vs_base), p_base, fmt_p(s.p_holm_base)]
        row += [rel(s.vs_equal), fmt_p(s.p_holm_equal)] if equal else []
        rows.append(row + [rel(s.vs_ref), p_ref] + ([cost_cell(s)] if cost else []))
    points = "R²" if is_r2(metric) else "points"  # the metric's own unit, as the mean's
    caption = (f"CI: 95 % t-interval half-width; vs floor: gain over the untrained encoder in {points}; vs base, "
               "vs equal t, vs all: relative gain in %; *: all listed components, the 'vs all' reference; p: Welch "
               "t-test; Holm: Holm–Bonferroni adjusted")  # fmt: skip
    table = Table(title=f"{metric} ({unit_label(metric)})", caption=caption, header_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    headers = ("variant", "n", "mean ± CI", f"vs floor ({points})", "vs base (%)", "p", "Holm")
    headers += ("vs equal t (%)", "Holm") if equal else ()
    for i, header in enumerate((*headers, "vs all (%)", "p", *(["s/step vs base"] if cost else []))):
        width = max(len(header), *(len(r[i]) for r in rows)) if rows else len(header)
        table.add_column(header, justify="left" if i == 0 else "right", min_width=width, overflow="fold")
    for r in rows:
        table.add_row(*r)
    return table
