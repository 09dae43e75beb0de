"""The `affssl` command line: parse → load and validate the spec → call one library function → print.

Errors a person can fix (`UserError`) end with one line on stderr and exit code 2; `--debug`
(or AFFSSL_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from affssl import runs
from affssl.errors import UserError
from affssl.spec import COMPONENTS, METHOD_SPECS, RunSpec, build_spec, read_toml

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
    _debug["on"] = _debug["on"] or debug


def friendly(command):
    """Turn UserError into one line and exit code 2 (traceback only with --debug)."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            if _debug["on"]:
                raise
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

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
                                                     "fashion-mnist | PATH to an image folder.")]  # fmt: skip
BackboneOpt = Annotated[str | None, typer.Option(help="resnet18 | resnet50.")]
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


RESUMABLE = ("train.epochs", "train.device", "train.log_every", "train.checkpoint_every")


def resume_spec(run: Path, requested: RunSpec, explicit: list[str]) -> RunSpec:
    """A resumed run keeps its own spec; only the fields in RESUMABLE may be changed."""
    saved = RunSpec.model_validate_json((run / runs.SPEC).read_text())
    allowed = [o for o in explicit if o.split("=", 1)[0].strip() in RESUMABLE]
    refused = [o.split("=", 1)[0] for o in explicit if o not in allowed and not o.startswith("method.name")]
    if refused:
        raise UserError(f"--resume keeps the run's spec; {', '.join(refused)} cannot change "
                        f"(only {', '.join(RESUMABLE)}); start a new run with another --out instead")  # fmt: skip
    return build_spec(json.loads(saved.model_dump_json()), allowed) if allowed else saved


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
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<base>-<kind>-<time>).")] = None,
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
    spec = resolve_spec(spec_file, base, explicit)
    if print_spec:
        out.print_json(spec.model_dump_json())
        return
    if resume:
        if out_dir is None:
            raise UserError("--resume needs --out RUN, the folder of the run to continue")
        runs.prepare(out_dir, resume=True, overwrite=False)
        spec = resume_spec(out_dir, spec, explicit + ([f"method.name={base}"] if base else []))
    run = out_dir or runs.default_name(spec)
    distributed.setup()
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
