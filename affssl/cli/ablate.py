"""`affssl ablate`: variants × seeds as ordinary run folders under OUT, restartable; statistics and plots."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from affssl import hostmem
from affssl.ablate.labels import label_free
from affssl.cli.console import friendly, out
from affssl.cli.options import (
    SpecArg,
    flag_overrides,
    resolve_spec,
)
from affssl.spec import COMPONENTS

VARIANTS, PROBES, TRAINING, RUNS = "Variants", "Probes", "Training (spec shortcuts)", "Runs"


def _opt(panel: str, help_: str, *names: str, **kw):
    return typer.Option(*names, help=help_, rich_help_panel=panel, **kw)


PresetOpt = Annotated[str | None, _opt(VARIANTS, "A paper table: main | components | aggregation | views | fill | "
                                                 "weight | location.")]  # fmt: skip
BasesOpt = Annotated[str | None, _opt(VARIANTS, "Bases, comma list (default: the spec's; a preset's: simclr, "
                                                "byol, barlow).", "--base")]  # fmt: skip
SubsetsOpt = Annotated[str | None, _opt(VARIANTS, "together: the listed components at once; singles (default): "
                                                  "also each alone; all: every subset.")]  # fmt: skip
StatUnitOpt = Annotated[str, _opt(PROBES, "seed: a sample per run; trial: per linear-probe trial (paper §2.4); "
                                          "auto: trial for one seed.")]  # fmt: skip
CurveOpt = Annotated[bool, _opt(PROBES, "Also probe the periodic checkpoints: accuracy vs epoch and vs time.",
                                "--curve")]  # fmt: skip
CurvePointsOpt = Annotated[int | None, _opt(PROBES, "Implies --curve: N points per run.", min=1, metavar="N")]
FloorOpt = Annotated[bool, _opt(VARIANTS, "Per base: score the untrained encoder (BatchNorm settled).")]
MATCH_HELP = "Per base, seed: the base trained for each + affine/objective run's time."
MatchTimeOpt = Annotated[bool, _opt(VARIANTS, MATCH_HELP, "--match-time")]
OBJECTIVES_HELP = "Axis: base + one of affine, augself, rotation, care."
ObjectivesOpt = Annotated[str | None, _opt(VARIANTS, OBJECTIVES_HELP)]
EvalOpt = Annotated[str, _opt(PROBES, "Comma list of probes: linear, knn, affine, equivariance.", "--eval")]
AblateOutOpt = Annotated[Path | None, _opt(RUNS, "Folder (default ablations/<preset, custom or objectives>).", "--out")]
JobsOpt = Annotated[int, _opt(RUNS, "Runs at once, each with 1/N of the threads (faster on a few CPU cores).",
                              min=1, metavar="N")]  # fmt: skip
EvalDatasetsOpt = Annotated[str | None, _opt(PROBES, "Comma list of data sets (default: the pretraining one).")]
ListOpt = Annotated[str | None, typer.Option(rich_help_panel=VARIANTS)]
CountOpt = Annotated[int | None, typer.Option(min=1, metavar="N", rich_help_panel=PROBES)]


@friendly
def ablate(
    spec_file: SpecArg = None,
    preset: PresetOpt = None,
    bases: BasesOpt = None,
    components: Annotated[str | None, _opt(VARIANTS, f"Comma list (default {', '.join(COMPONENTS)}).")] = None,
    subsets: SubsetsOpt = None,
    aggregation: Annotated[str | None, _opt(VARIANTS, "Axis: diff, concat (comma list).")] = None,
    views: Annotated[str | None, _opt(VARIANTS, "Axis: 1, 2.")] = None,
    fill: Annotated[str | None, _opt(VARIANTS, "Axis: black, bounded.")] = None,
    weight: Annotated[str | None, _opt(VARIANTS, "Axis: values of λ, e.g. 10,1.")] = None,
    location: Annotated[str | None, _opt(VARIANTS, "Axis: encoder, projector.")] = None,
    seeds: Annotated[int, _opt(VARIANTS, "Pretraining seeds per variant: train.seed, +1, …", min=1, metavar="N")] = 1,
    floor: FloorOpt = True,
    match_time: MatchTimeOpt = False,
    objectives: ObjectivesOpt = None,
    eval_: EvalOpt = "linear",
    eval_dataset: EvalDatasetsOpt = None,
    eval_trials: Annotated[int, _opt(PROBES, "Linear-probe trials per run (paper: 5).", min=1, metavar="N")] = 5,
    eval_limit: Annotated[int | None, _opt(PROBES, "Probe with N train images (stratified).", min=1, metavar="N")] = (
        None
    ),
    eval_max_iter: Annotated[int | None, _opt(PROBES, "L-BFGS iterations per fit.", min=1, metavar="N")] = None,
    eval_batch_size: Annotated[int, _opt(PROBES, "Images per forward pass.", min=1, metavar="N")] = 256,
    curve: CurveOpt = False,
    curve_points: CurvePointsOpt = None,
    stat_unit: StatUnitOpt = "auto",
    dataset: Annotated[str | None, _opt(TRAINING, "digits | cifar10 | … | PATH (as pretrain).")] = None,
    backbone: Annotated[str | None, _opt(TRAINING, "torchvision classification model (as pretrain).")] = None,
    epochs: Annotated[int | None, _opt(TRAINING, "Training epochs.", metavar="N")] = None,
    batch_size: Annotated[int | None, _opt(TRAINING, "Global batch size.", metavar="N")] = None,
    limit: Annotated[int | None, _opt(TRAINING, "Train on N images (stratified).", metavar="N")] = None,
    device: Annotated[str | None, _opt(TRAINING, "auto | cpu | cuda.")] = None,
    set_: Annotated[
        list[str] | None, _opt(TRAINING, "Override any spec field: --set optim.lr=0.001", "--set", metavar="KEY=VALUE")
    ] = None,
    jobs: JobsOpt = 1,
    out_dir: AblateOutOpt = None,
    dry_run: Annotated[bool, _opt(RUNS, "Print the planned runs and exit.", "--dry-run")] = False,
) -> None:
    """The paper's ablations (§3) or the objectives (--objectives): variants × seeds, run folders in OUT; restartable.

    A finished run is never rerun: after a kill, the same command completes what is missing.
    Writes OUT/ablate.json, results.csv, summary.md (mean ± 95 % CI, Welch tests) and plots.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from affssl import ablate as ab
    from affssl.ablate.summary import rich_table

    hostmem.imports_done()
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
                                eval_settings=settings, floor=floor, match_time=match_time,
                                objectives=objectives)  # fmt: skip
    planned = ab.plan(ablation, lambda b, extra: resolve_spec(spec_file, b, explicit + extra))
    folder = out_dir or Path("ablations") / (preset or ("objectives" if objectives else "custom"))
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
