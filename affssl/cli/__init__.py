"""The `affssl` command line: parse → load and validate the spec → call one library function → print.

Errors a person can fix (`UserError`) end with one line on stderr and exit code 2; `--debug`
(or AFFSSL_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from affssl import runlock, runs
from affssl.errors import UserError
from affssl.spec import (
    COMPONENTS,
    METHOD_SPECS,
    RESUMABLE,
    RunSpec,
    SpecError,
    build_spec,
    flatten,
    parse_value,
    read_toml,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Self-supervised pretraining with affine transformation estimation (Torpey & Klein, arXiv 2402.09071).",
)
out = Console()
err = Console(stderr=True)
_debug = {"on": os.environ.get("AFFSSL_DEBUG") == "1"}


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _debug["on"] = debug or os.environ.get("AFFSSL_DEBUG") == "1"


def friendly(command):
    """Turn UserError into one line and exit code 2 (traceback only with --debug)."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            if _debug["on"]:
                raise
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 2)) from None

    return wrapper


# ---------------------------------------------------------------------------------------------
# Shared options: shortcuts for spec fields; --set reaches every field.

SpecArg = Annotated[
    str | None, typer.Argument(help="TOML spec file or preset (default, paper, cifar10-cpu).", show_default=False)
]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override any field: --set optim.lr=0.001")]
BaseOpt = Annotated[str | None, typer.Option("--base", help=f"Base SSL method: {' | '.join(METHOD_SPECS)}.")]
AffineOpt = Annotated[bool | None, typer.Option("--affine/--no-affine", help="Add the affine module (default on).")]
ComponentsOpt = Annotated[str | None, typer.Option(help=f"Comma list of affine components: {','.join(COMPONENTS)}.")]
DatasetOpt = Annotated[str | None, typer.Option(help="digits | cifar10 | cifar100 | stl10 | svhn | mnist | "
                                                     "fashion-mnist | caltech101 | PATH to an image folder (Tiny "
                                                     "ImageNet's layout too).")]  # fmt: skip
BackboneOpt = Annotated[str | None, typer.Option(help="torchvision classification model: resnet18, vit_b_16, ….")]
EpochsOpt = Annotated[int | None, typer.Option(help="Training epochs.")]
BatchOpt = Annotated[int | None, typer.Option(help="Global batch size.")]
LimitOpt = Annotated[int | None, typer.Option(help="Train on N images (stratified when labelled).")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed for weights, data order, views and affine parameters.")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda.")]


def flag_overrides(base=None, affine=None, components=None, dataset=None, backbone=None, epochs=None,
                   batch_size=None, limit=None, seed=None, device=None) -> list[str]:  # fmt: skip
    """The shortcut flags as dotted overrides, applied before --set."""
    pairs = {
        "affine.enabled": affine,
        "affine.components": [c.strip() for c in components.split(",") if c.strip()] if components else None,
        "data.dataset": dataset,
        "backbone.name": backbone,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "data.limit": limit,
        "train.seed": seed,
        "train.device": device,
    }
    return [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None]


def resolve_spec(source: str | None, base: str | None, overrides: list[str]) -> RunSpec:
    tree = read_toml(source) if source else read_toml("default")
    if base is not None:
        if base not in METHOD_SPECS:
            raise UserError(f"unknown base method {base!r}; choose one of {', '.join(METHOD_SPECS)}")
        if tree.get("method", {}).get("name", "simclr") != base:
            tree["method"] = {"name": base}  # the file's method options belong to another method
    return build_spec(tree, overrides)


def resume_spec(run: Path, source: str | None, base: str | None, explicit: list[str]) -> RunSpec:
    """The run's stored spec, changed only in RESUMABLE fields; any flag that contradicts it is refused.

    Without a spec file each flag and --set is compared with the stored value of its field (repeating
    it is fine); with one, the whole resolved file is compared.
    """
    try:
        saved = RunSpec.model_validate_json((run / runs.SPEC).read_text())
    except (OSError, ValueError):
        raise UserError(f"{run / runs.SPEC} is missing or unreadable, so {run} cannot be resumed; "
                        "start a new run with another --out") from None  # fmt: skip
    stored = flatten(json.loads(saved.model_dump_json()))
    asked: list[tuple[str, dict]] = []  # (field the user named, the spec tree it asks for)
    if base is not None and base != saved.method.name:
        _refuse(run, "method.name", saved.method.name, base)
    if source is not None:
        asked.append(("", json.loads(resolve_spec(source, base, explicit).model_dump_json())))
    for assignment in explicit:
        key = assignment.partition("=")[0].strip()
        try:
            asked.append((key, json.loads(build_spec(json.loads(saved.model_dump_json()), [assignment])
                                          .model_dump_json())))  # fmt: skip
        except SpecError:
            if key != "method.name":  # another method's options do not fit the stored method section
                raise
            _refuse(run, key, saved.method.name, parse_value(assignment.partition("=")[2].strip()))
    changes: dict[str, object] = {}
    for key, tree in asked:
        new = flatten(tree)
        differ = sorted(k for k in stored.keys() | new.keys() if stored.get(k) != new.get(k))
        for k in sorted(differ, key=lambda k: (k != key, k != "method.name", k)):  # the named field first
            if k not in RESUMABLE:
                _refuse(run, k, stored.get(k), new.get(k))
            changes[k] = new[k]
    if not changes:
        return saved
    tree = json.loads(saved.model_dump_json())
    for k, v in changes.items():
        *parents, leaf = k.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node[leaf] = v
    return RunSpec.model_validate(tree)


def _refuse(run: Path, field: str, stored: object, requested: object) -> None:
    raise UserError(
        f"--resume cannot change {field}: the run in {run} has {json.dumps(stored)}, this command asks for "
        f"{json.dumps(requested)}; drop that flag, or start a new run with another --out "
        f"(--resume may change only {', '.join(RESUMABLE)})"
    )


# ---------------------------------------------------------------------------------------------


@app.command()
@friendly
def pretrain(
    spec_file: SpecArg = None,
    base: BaseOpt = None,
    affine: AffineOpt = None,
    components: ComponentsOpt = None,
    dataset: DatasetOpt = None,
    backbone: BackboneOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<base>-<kind>-<time>).")] = (
        None
    ),
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the run in --out.")] = False,
    print_spec: Annotated[bool, typer.Option(help="Print the resolved spec as TOML-ready JSON and exit.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Pretrain an encoder; writes RUN/spec.json, RUN/metrics.jsonl and RUN/last.safetensors."""
    from affssl import distributed
    from affssl.engine import pretrain as run_pretrain

    explicit = flag_overrides(None, affine, components, dataset, backbone, epochs, batch_size, limit, seed, device)
    explicit += list(set_ or [])
    if resume:  # the run's own spec; flags may only repeat it or change RESUMABLE fields
        if out_dir is None:
            raise UserError("--resume needs --out RUN, the folder of the run to continue")
        runs.prepare(out_dir, resume=True, overwrite=False)
        spec = resume_spec(out_dir, spec_file, base, explicit)
    else:
        spec = resolve_spec(spec_file, base, explicit)
    if print_spec:
        out.print_json(spec.model_dump_json())
        return
    run = out_dir or runs.default_name(spec)
    distributed.setup()
    with runlock.hold(run) if distributed.is_main() else contextlib.nullcontext() as stale:
        if stale:
            err.print(f"note: took over the lock of a run that ended without releasing it ({escape(stale)})")
        if distributed.is_main() and resume:
            runs.write_spec(run, spec)  # records a changed RESUMABLE field (e.g. more epochs)
        if distributed.is_main() and not resume:
            runs.prepare(run, resume=False, overwrite=overwrite)
        distributed.barrier()
        t0 = time.perf_counter()
        last = run_pretrain(spec, run, resume=resume, show_progress=progress)
    if distributed.is_main():
        summary = [r for r in runs.read_metrics(run) if r.get("kind") == "epoch"][-1]
        out.print(
            f"[green]done[/] in {time.perf_counter() - t0:.0f} s — {spec.method.name}"
            f"{' + affine' if spec.affine.enabled else ''}, {spec.train.epochs} epochs, final loss "
            f"{summary['loss']:.4f}, {summary['img_per_s']:.0f} img/s\ncheckpoint: {last}",
            highlight=False,
        )
    distributed.teardown()


# ---------------------------------------------------------------------------------------------
# Evaluation and export: each command rebuilds the backbone from the file's header (no --arch).

eval_app = typer.Typer(no_args_is_help=True, help="Probe the frozen encoder of a checkpoint or export.")
app.add_typer(eval_app, name="eval")

CkptArg = Annotated[Path, typer.Argument(help="RUN/last.safetensors, or an `affssl export` file.", show_default=False)]
EvalDatasetOpt = Annotated[
    str | None,
    typer.Option(
        help="Data set to probe (default: the checkpoint's own): a name or an image folder; another one is transfer."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a table.")]
EvalDeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda.")]
EvalBatchOpt = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]
EvalSeedOpt = Annotated[int, typer.Option(help="Base seed of the validation splits, carved splits and φ draws.")]
EvalLimitOpt = Annotated[int | None, typer.Option(min=1, help="Probe with N train images (stratified): quick look.")]
CacheOpt = Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse and keep features in RUN/eval/cache.")]


def _show(record: dict, as_json: bool) -> None:
    from affssl.eval.report import table

    if as_json:
        typer.echo(json.dumps(record))
    else:
        out.print(table(record), highlight=False)


InitOpt = Annotated[str, typer.Option(help="trained: probe CKPT; random: the untrained encoder of a spec (CKPT: "
                                           "TOML, preset or RUN/spec.json; + --set), BatchNorm settled.")]  # fmt: skip


def _probe(protocol: str, ckpt: Path, as_json: bool, init: str = "trained", set_=None, **options) -> None:
    """Run one of affssl.eval's evaluate_<protocol> functions and show its record."""
    import affssl.eval

    evaluate = getattr(affssl.eval, f"evaluate_{protocol}")
    if init == "random":  # the floor: RUN/floor or floors/<spec hash>/last.safetensors (affssl.floor)
        from affssl import floor

        source = str(ckpt)
        if Path(source).name == runs.SPEC and Path(source).is_file():
            spec = build_spec(json.loads(Path(source).read_text()), list(set_ or []))
        else:
            spec = resolve_spec(source, None, list(set_ or []))
        ckpt = floor.write_floor(spec, floor.default_folder(source, spec))
    elif init != "trained":
        raise UserError(f"--init {init!r}: choose trained or random")
    elif set_:
        raise UserError("--set applies to --init random only; a checkpoint carries its own spec")
    _show(evaluate(ckpt, progress=err.is_terminal, **options), as_json)


@eval_app.command("linear")
@friendly
def eval_linear(
    ckpt: CkptArg,
    dataset: EvalDatasetOpt = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials: validation seeds seed…seed+N−1.")] = 5,
    json_: JsonOpt = False,
    device: EvalDeviceOpt = "auto",
    batch_size: EvalBatchOpt = 256,
    seed: EvalSeedOpt = 0,
    limit: EvalLimitOpt = None,
    cache: CacheOpt = True,
    init: InitOpt = "trained",
    set_: SetOpt = None,
) -> None:
    """The paper's linear probe: logistic regression, C chosen on a validation split of train; mean ± 95 % CI."""
    _probe("linear", ckpt, json_, init, set_, trials=trials, dataset=dataset, seed=seed, limit=limit, device=device,
           batch_size=batch_size, cache=cache)  # fmt: skip


@eval_app.command("knn")
@friendly
def eval_knn(
    ckpt: CkptArg,
    dataset: EvalDatasetOpt = None,
    json_: JsonOpt = False,
    device: EvalDeviceOpt = "auto",
    batch_size: EvalBatchOpt = 256,
    seed: EvalSeedOpt = 0,
    limit: EvalLimitOpt = None,
    cache: CacheOpt = True,
    init: InitOpt = "trained",
    set_: SetOpt = None,
) -> None:
    """Weighted cosine kNN (k = 20 and 200, T = 0.1) on frozen features."""
    _probe("knn", ckpt, json_, init, set_, dataset=dataset, seed=seed, limit=limit, device=device,
           batch_size=batch_size, cache=cache)  # fmt: skip


@eval_app.command("affine")
@friendly
def eval_affine(
    ckpt: CkptArg,
    dataset: EvalDatasetOpt = None,
    json_: JsonOpt = False,
    device: EvalDeviceOpt = "auto",
    batch_size: EvalBatchOpt = 256,
    seed: EvalSeedOpt = 0,
    limit: EvalLimitOpt = None,
    cache: CacheOpt = True,
    init: InitOpt = "trained",
    set_: SetOpt = None,
) -> None:
    """Equivariance probe: R² of φ (rotation, translation, scale, shear) from features of an image and its warp."""
    _probe("affine", ckpt, json_, init, set_, dataset=dataset, seed=seed, limit=limit, device=device,
           batch_size=batch_size, cache=cache)  # fmt: skip


@app.command("export")
@friendly
def export_backbone(
    ckpt: CkptArg,
    out_path: Annotated[Path, typer.Option("--out", help="File to write.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="safetensors | onnx (needs affssl[onnx]).")] = "safetensors",
    json_: JsonOpt = False,
) -> None:
    """Write the backbone alone; safetensors keys are those of torchvision's ResNet (fc removed)."""
    from affssl.export import export

    summary = export(ckpt, out_path, fmt)
    if json_:
        typer.echo(json.dumps(summary))
        return
    check = f", ONNX Runtime vs torch max |diff| {summary['max_abs_diff']:.1e}" if "max_abs_diff" in summary else ""
    out.print(
        f"[green]exported[/] {summary['path']} ({fmt}, {summary['params']:,} parameters, "
        f"{summary['feat_dim']}-d features{check})",
        highlight=False,
    )


# ---------------------------------------------------------------------------------------------
# Ablations: variants × seeds as ordinary run folders under OUT, restartable; statistics and plots.

PresetOpt = Annotated[str | None, typer.Option(help="A paper table: main | components | aggregation | views | fill | "
                                                   "weight | location.")]  # fmt: skip
BasesOpt = Annotated[str | None, typer.Option("--base", help="Comma list of base methods (default: the spec's; a "
                                                             "preset's: simclr,byol,barlow).")]  # fmt: skip
SubsetsOpt = Annotated[str | None, typer.Option(help="together: all listed components at once; singles (default): "
                                                     "also each alone; all: every non-empty subset.")]  # fmt: skip
StatUnitOpt = Annotated[str, typer.Option(help="seed: one sample per run; trial: one per linear-probe trial (paper "
                                               "§2.4); auto: trial for one seed.")]  # fmt: skip
CurveOpt = Annotated[bool, typer.Option(help="Also probe each periodic checkpoint: accuracy vs epoch and vs time.")]
CurvePointsOpt = Annotated[int | None, typer.Option(min=1, help="Implies --curve: a checkpoint every max(1, "
                                                    "epochs // N) epochs, so ≥ min(N, epochs) points.")]  # fmt: skip
FloorOpt = Annotated[bool, typer.Option(help="Per base: score the untrained encoder (BatchNorm settled).")]
MatchTimeOpt = Annotated[bool, typer.Option(help="Per base and seed: the base trained for the + affine run's "
                                                 "measured time (epochs × t_affine / t_base).")]  # fmt: skip
AblateOutOpt = Annotated[Path | None, typer.Option("--out", help="Folder (default ablations/<preset or custom>).")]
EvalDatasetsOpt = Annotated[str | None, typer.Option(help="Comma list of data sets to probe (default: the "
                                                          "pretraining one).")]  # fmt: skip


@app.command()
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

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=out)  # fmt: skip
    task = progress.add_task("ablate", total=len(planned))
    doing = {"train": "pretraining", "resume": "resuming", "evaluate": "evaluating", "curve": "probing checkpoints"}

    def report(e) -> None:
        who = f"[{e.index}/{e.total}] {e.run.variant.name} seed {e.run.seed}"
        if e.phase in doing:
            progress.update(task, description=f"{who}: {doing[e.phase]}")
            return
        word = "[dim]skipped (finished)[/]" if e.phase == "skip" else f"[green]done[/] in {e.seconds:.0f} s"
        progress.console.print(f"{who} {word}", highlight=False)
        progress.update(task, advance=1, description="ablate")

    t0 = time.perf_counter()
    with progress:
        result = ab.run(ablation, planned, folder, stat_unit, report)
    for metric, stats in result.tables.items():
        out.print(rich_table(metric, stats))
    out.print(
        f"{result.finished} of {result.planned} runs in {folder} ({time.perf_counter() - t0:.0f} s); samples: "
        f"{result.unit}\nresults: {result.results}\nsummary: {result.summary}\nplots: "
        + ", ".join(str(p) for p in result.plots),
        highlight=False,
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
