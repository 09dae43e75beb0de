"""The `affssl ablate` command's one library call: plan file → runs → results.csv, summary.md, plots.

The runner, the statistics and the plots are imported when they are needed, so that planning an
ablation (`affssl ablate --dry-run`) imports neither torch nor matplotlib.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from affssl.ablate.planning import Ablation, PlannedRun, write_plan
from affssl.errors import UserError


@dataclass(frozen=True)
class Outputs:
    results: Path
    summary: Path
    plots: tuple[Path, ...]
    unit: str  # "seed" | "trial": what one sample of the statistics is
    tables: dict[str, list]  # metric → list[affssl.ablate.results.VariantStats], in plan order
    finished: int
    planned: int


def run(
    ablation: Ablation, planned: list[PlannedRun], out: Path, unit: str = "auto", report=None, jobs: int = 1
) -> Outputs:
    """Write OUT/ablate.json, bring every run to done (finished ones skipped, `jobs` at once), write the outputs."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: give at least 1")
    if unit not in ("auto", "seed", "trial"):
        raise UserError(f"--stat-unit {unit!r}: choose auto, seed or trial")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("ablate runs its runs itself (--jobs N for several at once); start it without torchrun")
    write_plan(out, ablation, planned)
    report = report or (lambda event: None)
    if jobs > 1:
        from affssl.ablate.parallel import execute_parallel

        execute_parallel(planned, out, ablation.eval, report, jobs)
    else:
        from affssl.ablate.runner import execute

        execute(planned, out, ablation.eval, report)
    return write_outputs(ablation, planned, out, unit)


def write_outputs(ablation: Ablation, planned: list[PlannedRun], out: Path, unit: str = "auto") -> Outputs:
    """results.csv, summary.md and the PNG plots from whatever runs in OUT are finished."""
    from affssl.ablate import plots, results
    from affssl.ablate.study import resolve
    from affssl.ablate.summary import write_summary

    if unit not in ("auto", "seed", "trial"):
        raise UserError(f"--stat-unit {unit!r}: choose auto, seed or trial")
    trials = len(ablation.seeds) == 1 and "linear" in ablation.eval.protocols  # the paper's n: probe trials
    chosen = ("trial" if trials else "seed") if unit == "auto" else unit
    planned = resolve(planned, out, ablation.eval.curve_points)  # equal-time runs: their measured epochs
    rows = results.collect(planned, out, ablation.eval)
    metrics = results.metric_names(rows)
    tables = {m: results.variant_stats(planned, rows, m, chosen) for m in metrics}  # type: ignore[arg-type]
    csv_path = results.write_csv(rows, out / "results.csv")
    summary = write_summary(out / "summary.md", ablation, tables, chosen, len(rows), len(planned), rows, planned)  # type: ignore[arg-type]
    pictures = [plots.plot_variants(m, tables[m], out / f"variants-{m}.png") for m in metrics if tables[m]]
    if metrics and tables[metrics[0]]:
        pictures.append(plots.plot_cost(metrics[0], tables[metrics[0]], out / "cost.png"))
        linear = next((m for m in metrics if m.startswith("linear-")), None)
        if ablation.eval.curve and linear and (curve := plots.plot_curves(linear, rows, out / "curve.png")):
            pictures.append(curve)
    accuracy = next((tables[m] for m in metrics if m.startswith("linear-") and tables[m]), None)
    profile = {m: tables[m] for m in metrics if m.startswith("equivariance-") and tables[m]}
    if accuracy and profile and (picture := plots.plot_tradeoff(accuracy, profile, out / "tradeoff.png")):
        pictures.append(picture)
    for stem in (m.removesuffix("-r2") for m in metrics if m.startswith("affine-") and m.endswith("-r2")):
        if picture := plots.plot_r2(stem, results.component_r2(planned, rows, stem), out / f"r2-{stem}.png"):
            pictures.append(picture)
    return Outputs(csv_path, summary, tuple(pictures), chosen, tables, len(rows), len(planned))
