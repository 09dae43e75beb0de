"""`affssl pretrain`: resolve the spec (the run's own with --resume), lock the run folder, train, print a summary."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from affssl import cpus, hostmem, loggers, runlock, runs
from affssl.cli.console import err, friendly, out
from affssl.cli.options import (
    AffineOpt,
    AuxOpt,
    BackboneOpt,
    BaseOpt,
    BatchOpt,
    ComponentsOpt,
    DatasetOpt,
    DeviceOpt,
    EpochsOpt,
    LimitOpt,
    SeedOpt,
    SetOpt,
    SpecArg,
    flag_overrides,
    resolve_spec,
)
from affssl.errors import UserError
from affssl.spec import AUX, RunSpec, SpecError, build_spec, flatten, parse_value
from affssl.spec.run import to_toml

# Fields `pretrain --resume` may change: how long, where and how often a run trains, logs and saves,
# where its data cache lives and how many loader processes read it (the batches do not depend on
# that); never what it learns from or how. Other fields may be repeated.
RESUMABLE: tuple[str, ...] = ("train.epochs", "train.device", "train.log_every", "train.checkpoint_every",
                             "train.checkpoint_every_steps", "train.max_loss", "train.threads", "data.root",
                             "data.cache", "data.workers", "train.monitor_every", "train.monitor_images",
                             "train.monitor_queries", "train.loggers")  # fmt: skip


@friendly
def pretrain(
    spec_file: SpecArg = None,
    base: BaseOpt = None,
    affine: AffineOpt = None,
    aux: AuxOpt = None,
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
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run in --out.")] = False,
    allow_data_change: Annotated[
        bool, typer.Option("--allow-data-change", help="With --resume: go on although the data changed.")
    ] = False,
    print_spec: Annotated[bool, typer.Option("--print-spec", help="Print the resolved spec as TOML and exit.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    preview: Annotated[
        Path | None,
        typer.Option(metavar="PNG", help="Draw the first batch's views and warps into PNG and exit (no training)."),
    ] = None,
    threads: Annotated[
        str | None,
        typer.Option(metavar="auto|N", help="torch's CPU threads (train.threads); 1 beside other work on 2 cores."),
    ] = None,
) -> None:
    """Pretrain an encoder; writes RUN/spec.json, RUN/metrics.jsonl and RUN/last.safetensors."""
    from affssl import distributed, runenv
    from affssl.data import storage
    from affssl.engine import pretrain as run_pretrain
    from affssl.engine import resolve_device

    hostmem.imports_done()

    explicit = flag_overrides(None, affine, components, dataset, backbone, epochs, batch_size, limit, seed, device,
                              aux)  # fmt: skip
    explicit += [] if threads is None else [f"train.threads={json.dumps(runenv.threads_option(threads))}"]
    explicit += list(set_ or [])
    if allow_data_change and not resume:
        raise UserError("--allow-data-change only applies to --resume (a new run fingerprints the data it finds)")
    if resume:  # the run's own spec; flags may only repeat it or change RESUMABLE fields
        if out_dir is None:
            raise UserError("--resume needs --out RUN, the folder of the run to continue")
        runs.prepare(out_dir, resume=True, overwrite=False)
        spec = resume_spec(out_dir, spec_file, base, explicit)
        check_trained(out_dir, spec)
    else:
        spec = resolve_spec(spec_file, base, explicit)
    if print_spec:  # `affssl pretrain --print-spec > s.toml && affssl pretrain s.toml` trains the same run
        typer.echo(to_toml(spec), nl=False)
        return
    if preview is not None:
        _preview(spec, preview, progress)
        return
    loggers.require(spec.train.loggers)  # before any folder is made
    run = out_dir or runs.default_name(spec)
    distributed.setup()
    # Inputs first: nothing is created (run folder, lock) for a run whose folder or data cannot be used.
    runs.check(run, resume=resume, overwrite=overwrite)
    spec, data = storage.settle(spec, resolve_device(spec.train.device), progress and distributed.is_main())
    cpus.mark_window()  # after a long decode the busy sample starts here (affssl.cpus)
    main = distributed.is_main()
    with runs.UndoOnFailure(run, overwrite, on=main and not resume) as undo, \
            runlock.hold(run) if main else contextlib.nullcontext() as stale:  # fmt: skip
        undo.arm()  # the folder is this command's now: a failure before its first checkpoint removes what it made
        if stale:
            err.print(f"note: took over the lock of a run that ended without releasing it ({escape(stale)})")
        if distributed.is_main() and not resume:
            runs.prepare(run, resume=False, overwrite=overwrite)
        distributed.barrier()
        t0 = time.perf_counter()
        last = run_pretrain(spec, run, resume=resume, show_progress=progress, data=data,
                            allow_data_change=allow_data_change)  # fmt: skip
    if distributed.is_main():
        summary = [r for r in runs.read_metrics(run) if r.get("kind") == "epoch"][-1]
        epochs = f"{spec.train.epochs} epoch{'s' * (spec.train.epochs != 1)}"
        scores = next((r for r in reversed(runs.read_metrics(run)) if "monitor_knn_top1" in r), None)
        watched = f", monitor {monitor_line(scores)}" if scores else ""
        out.print(
            f"[green]done[/] in {time.perf_counter() - t0:.0f} s — {spec.method.name}"
            f"{''.join(f' + {name}' for name in AUX if getattr(spec, name).enabled)}, {epochs}, final loss "
            f"{summary['loss']:.4f}, {summary['img_per_s']:.0f} img/s{watched}\ncheckpoint: {last}",
            highlight=False,
        )
    distributed.teardown()


def monitor_line(record: dict) -> str:
    """The online monitor's scores of an epoch record: 'kNN 93.6 %, R² 0.61 (epoch 8)'."""
    from affssl.monitor import describe

    return f"{describe(record).replace('  ', ', ')} (epoch {record['epoch']})"


def check_trained(run: Path, spec: RunSpec) -> None:
    """Refuse --epochs below what the run's checkpoint has trained: it would rewrite spec.json and train nothing."""
    from affssl import checkpoint

    header = checkpoint.read_header(run / runs.LAST)
    done = int(header.get("epoch", "0")) + (int(header.get("epoch_step", "0")) > 0)  # inside an epoch: that one too
    if spec.train.epochs < done:
        raise UserError(f"--resume cannot train {run} to {spec.train.epochs} epochs: its checkpoint "
                        f"({run / runs.LAST}) is at epoch {done}; pass --epochs {done} or more, or start a new run "
                        "with another --out")  # fmt: skip


def _preview(spec: RunSpec, path: Path, progress: bool) -> None:
    from affssl.preview import phi_text, write_preview

    shown = write_preview(spec, path, progress=progress)
    what = "" if shown.phi is None else "; φ per row: " + " | ".join(phi_text(p).replace("\n", " ") for p in shown.phi)
    out.print(f"[green]preview[/] {escape(str(path))}: {shown.stored.shape[0]} images of the first batch{what}",
              highlight=False, soft_wrap=True)  # fmt: skip


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
