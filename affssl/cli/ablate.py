"""`affssl ablate`: variants × seeds as ordinary run folders under OUT, restartable; statistics and plots."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from affssl.ablate.labels import label_free
from affssl.cli.console import friendly, out
from affssl.cli.options import (
    BackboneOpt,
    BatchOpt,
    DatasetOpt,
    DeviceOpt,
    EpochsOpt,
    LimitOpt,
    SetOpt,
    SpecArg,
    flag_overrides,
    resolve_spec,
)
from affssl.spec import COMPONENTS

PresetOpt = Annotated[str | None, typer.Option(help="A paper table: main | components | aggregation | views | fill | "
                                                   "weight | location.")]  # fmt: skip
BasesOpt = Annotated[str | None, typer.Option("--base", help="Comma list of base methods (default: the spec's; a "
                                                             "preset's: simclr,byol,barlow).")]  # fmt: skip
SubsetsOpt = Annotated[str | None, typer.Option(help="together: all listed components at once; singles (default): "
                                                     "also each alone; all: every non-empty subset.")]  # fmt: skip
StatUnitOpt = Annotated[str, typer.Option(help="seed: one sample per run; trial: one per linear-probe trial (paper "
                                               "§2.4); auto: trial for one seed.")]  # fmt: skip
CurveOpt = Annotated[bool, typer.Option(help="Also probe each periodic checkpoint: accuracy vs epoch and vs time.")]
CurvePointsOpt = Annotated[int | None, typer.Option(min=1, help="Implies --curve: N points per run (the last "
                                                    "epoch and N − 1 evenly spaced checkpoints).")]  # fmt: skip
FloorOpt = Annotated[bool, typer.Option(help="Per base: score the untrained encoder (BatchNorm settled).")]
MatchTimeOpt = Annotated[bool, typer.Option(help="Per base and seed: the base trained for the + affine run's "
                                                 "measured time (epochs × t_affine / t_base).")]  # fmt: skip
AblateOutOpt = Annotated[Path | None, typer.Option("--out", help="Folder (default ablations/<preset or custom>).")]
JobsOpt = Annotated[int, typer.Option(min=1, help="Runs at once, each in its own process with 1/N of the "
                                            "threads (faster on a few CPU cores; see README).")]  # fmt: skip
EvalDatasetsOpt = Annotated[str | None, typer.Option(help="Comma list of data sets to probe (default: the "
                                                          "pretraining one).")]  # fmt: skip


@friendly
def ablate(
    spec_file: SpecArg = None,
    preset: PresetOpt = None,
    bases: BasesOpt = None,
    components: Annotated[str | None, typer.Option(help=f"Comma list, default {','.join(COMPONENTS)}.")] = None,
    subsets: SubsetsOpt = None,
    aggregation: Annotated[str | None, typer.Option(help="Axis, comma list: diff,concat.")] = None,
    views: Annotated[str | None, typer.Option(help="Axis, comma list: 1,2.")] = None,
    fill: Annotated[str | None, typer.Option(help="Axis, comma list: black,bounded.")] = None,
    weight: Annotated[str | None, typer.Option(help="Axis, comma list of λ: e.g. 10,1.")] = None,
    location: Annotated[str | None, typer.Option(help="Axis, comma list: encoder,projector.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Pretraining seeds per variant: train.seed, train.seed+1, …")] = 1,
    eval_: Annotated[str, typer.Option("--eval", help="Comma list of probes: linear, knn, affine.")] = "linear",
    eval_dataset: EvalDatasetsOpt = None,
    eval_trials: Annotated[int, typer.Option(min=1, help="Linear-probe trials per run (paper: 5).")] = 5,
    eval_limit: Annotated[int | None, typer.Option(min=1, help="Probe with N train images (stratified).")] = None,
    eval_max_iter: Annotated[int | None, typer.Option(min=1, help="L-BFGS iterations per linear-probe fit.")] = None,
    eval_batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass when probing.")] = 256,
    curve: CurveOpt = False,
    curve_points: CurvePointsOpt = None,
    floor: FloorOpt = True,
    match_time: MatchTimeOpt = False,
    stat_unit: StatUnitOpt = "auto",
    jobs: JobsOpt = 1,
    dataset: DatasetOpt = None,
    backbone: BackboneOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    limit: LimitOpt = None,
    device: DeviceOpt = None,
    out_dir: AblateOutOpt = None,
    set_: SetOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Print the planned runs and exit.")] = False,
) -> None:
    """The paper's ablations (§3): baseline, all listed components, each alone, × axes × seeds; restartable.

    Each (variant, seed) is a run folder OUT/<variant>/seed-<s>/; a finished one is never rerun.

    After a kill, the same command completes only what is missing.

    Writes OUT/ablate.json, results.csv, summary.md (mean ± 95 % CI, Welch p vs the baseline and vs all components)
    and PNG plots.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from affssl import ablate as ab
    from affssl.ablate.summary import rich_table

    explicit = flag_overrides(None, None, None, dataset, backbone, epochs, batch_size, limit, None, device)
    explicit += list(set_ or [])
    default = resolve_spec(spec_file, None, explicit)
    settings = ab.EvalSettings(
        protocols=ab.split_list(eval_),
        datasets=ab.split_list(eval_dataset) or (None,),
        trials=eval_trials,
        limit=eval_limit,
        max_iter=eval_max_iter,
        batch_size=eval_batch_size,
        curve=curve or curve_points is not None,
        curve_points=curve_points,
    )
    axes = {"aggregation": aggregation, "views": views, "fill": fill, "weight": weight, "location": location}
    ablation = ab.make_ablation(default_base=default.method.name, first_seed=default.train.seed, preset=preset,
                                bases=bases, components=components, subsets=subsets, axes=axes, seeds=seeds,
                                eval_settings=settings, floor=floor, match_time=match_time)  # fmt: skip
    planned = ab.plan(ablation, lambda b, extra: resolve_spec(spec_file, b, explicit + extra))
    folder = out_dir or Path("ablations") / (preset or "custom")
    if dry_run:
        for v in dict.fromkeys(r.variant for r in planned):
            note = " (all)" if v.reference else ""
            line = f"{v.name}{note}  seeds {', '.join(map(str, ablation.seeds))}  {' '.join(v.overrides)}"
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        out.print(f"{len(planned)} runs into {folder}", highlight=False)
        return

    settings, skipped = label_free(settings, default.data.dataset)
    if skipped:
        out.print(skipped, markup=False, highlight=False, soft_wrap=True)
        ablation = replace(ablation, eval=settings)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=out)  # fmt: skip
    task = progress.add_task("ablate", total=len(planned))
    doing = {"train": "pretraining", "resume": "resuming", "evaluate": "evaluating", "curve": "probing checkpoints"}

    active: dict[int, str] = {}  # plan index → what that run is doing (several with --jobs)

    def report(e) -> None:
        who = f"[{e.index}/{e.total}] {e.run.variant.name} seed {e.run.seed}"
        if e.phase in doing:
            active[e.index] = f"{who}: {doing[e.phase]}"
            progress.update(task, description=" | ".join(active.values()))
            return
        active.pop(e.index, None)
        word = "[dim]skipped (finished)[/]" if e.phase == "skip" else f"[green]done[/] in {e.seconds:.0f} s"
        progress.console.print(f"{who} {word}", highlight=False)
        progress.update(task, advance=1, description=" | ".join(active.values()) or "ablate")

    t0 = time.perf_counter()
    with progress:
        result = ab.run(ablation, planned, folder, stat_unit, report, jobs)
    for metric, stats in result.tables.items():
        out.print(rich_table(metric, stats))
    out.print(
        f"{result.finished} of {result.planned} runs in {folder} ({time.perf_counter() - t0:.0f} s); samples: "
        f"{result.unit}\nresults: {result.results}\nsummary: {result.summary}\nplots: "
        + ", ".join(str(p) for p in result.plots),
        highlight=False,
    )
