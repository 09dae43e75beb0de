"""`affssl eval linear | knn | affine | equivariance | embed`: probe or map the frozen encoder of a checkpoint.

The file is a checkpoint, an export or (--init random) a spec.

Each command rebuilds the backbone from the file's header (no --arch) and calls one of affssl.eval's
evaluate_<protocol> functions; the record is shown as a table or, with --json, one JSON object.
`--threads` (auto: this machine's CPUs, affssl.runenv) is set before anything computes, its line
printed on stderr once the record is in; the record keeps the count (options.threads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from affssl import hostmem, runs
from affssl.cli.console import Command, Group, err, friendly, out
from affssl.cli.options import CkptArg, JsonOpt, SetOpt, checkpoint_file, resolve_spec
from affssl.errors import UserError
from affssl.spec import build_spec

app = typer.Typer(cls=Group, no_args_is_help=True, help="Probe the frozen encoder of a checkpoint or export.")

EvalDatasetOpt = Annotated[
    str | None,
    typer.Option(
        help="Data set to probe (default: the checkpoint's own): a name or an image folder; another one is transfer."
    ),
]
EvalDeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda.")]
EvalBatchOpt = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]
EvalSeedOpt = Annotated[int, typer.Option(help="Base seed of the validation splits, carved splits and φ draws.")]
EvalLimitOpt = Annotated[int | None, typer.Option(min=1, help="Probe with N train images (stratified): quick look.")]
CacheOpt = Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse and keep features in RUN/eval/cache.")]
ThreadsOpt = Annotated[
    str,
    typer.Option(
        metavar="auto|N",
        help="torch's CPU threads; auto: this machine's CPUs (affinity mask, cgroup quota), not the checkpoint's.",
    ),
]


def _show(record: dict, as_json: bool) -> None:
    from affssl.eval.report import table

    if as_json:
        typer.echo(json.dumps(record))
    else:
        out.print(table(record), highlight=False)


MaxIterOpt = Annotated[int | None, typer.Option(min=1, metavar="N", help="L-BFGS iterations per fit (default 1000).")]
InitOpt = Annotated[str, typer.Option(help="trained: probe CKPT; random: the untrained encoder of a spec (CKPT: "
                                           "TOML, preset or RUN/spec.json; + --set), BatchNorm settled.")]  # fmt: skip


def _threads(threads: str) -> str:
    """Apply --threads (affssl.runenv) before anything computes; the line to print once the eval has run."""
    from affssl import runenv

    return runenv.set_threads(runenv.threads_option(threads), "--threads")[1]


def _probe(protocol: str, ckpt: Path, as_json: bool, init: str = "trained", set_=None, threads: str = "auto",
           **options) -> None:  # fmt: skip
    """Run one of affssl.eval's evaluate_<protocol> functions and show its record."""
    import affssl.eval
    from affssl import runenv

    hostmem.imports_done()
    threads_line = _threads(threads)
    evaluate = getattr(affssl.eval, f"evaluate_{protocol}")
    if init == "random":  # the floor: RUN/floor or floors/<spec hash>/last.safetensors (affssl.floor)
        from affssl import floor

        source = str(ckpt / runs.SPEC if (ckpt / runs.SPEC).is_file() else ckpt)  # a run folder: its spec.json
        if Path(source).name == runs.SPEC and Path(source).is_file():
            spec = build_spec(json.loads(Path(source).read_text()), list(set_ or []), source)
        else:
            spec = resolve_spec(source, None, list(set_ or []))
        ckpt = floor.write_floor(spec, floor.default_folder(source, spec))
    elif init != "trained":
        raise UserError(f"--init {init!r}: choose trained or random")
    elif set_:
        raise UserError("--set applies to --init random only; a checkpoint carries its own spec")
    else:
        ckpt = checkpoint_file(ckpt)
    record = evaluate(ckpt, progress=err.is_terminal, **options)
    runenv.say(threads_line)
    runenv.say(skipped_note(record))
    _show(record, as_json)


def skipped_note(record: dict) -> str | None:
    """The note when the probe's data set had unreadable images, left out within data.max_bad_frac."""
    skipped = record["dataset"].get("skipped") or []
    if not skipped:
        return None
    more = " …" if len(skipped) > 5 else ""
    return f"skipped {len(skipped)} unreadable image(s) of {record['dataset']['name']}: {', '.join(skipped[:5])}{more}"


@app.command("linear", cls=Command)
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
    threads: ThreadsOpt = "auto",
) -> None:
    """The paper's linear probe: logistic regression, C chosen on a validation split of train; mean ± 95 % CI."""
    _probe("linear", ckpt, json_, init, set_, threads, trials=trials, dataset=dataset, seed=seed, limit=limit,
           device=device, batch_size=batch_size, cache=cache)  # fmt: skip


@app.command("knn", cls=Command)
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
    threads: ThreadsOpt = "auto",
) -> None:
    """Weighted cosine kNN (k = 20 and 200, T = 0.1) on frozen features."""
    _probe("knn", ckpt, json_, init, set_, threads, dataset=dataset, seed=seed, limit=limit, device=device,
           batch_size=batch_size, cache=cache)  # fmt: skip


@app.command("affine", cls=Command)
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
    threads: ThreadsOpt = "auto",
) -> None:
    """Equivariance probe: R² of φ (rotation, translation, scale, shear) from features of an image and its warp."""
    _probe("affine", ckpt, json_, init, set_, threads, dataset=dataset, seed=seed, limit=limit, device=device,
           batch_size=batch_size, cache=cache)  # fmt: skip


@app.command("equivariance", cls=Command)
@friendly
def eval_equivariance(
    ckpt: CkptArg,
    dataset: EvalDatasetOpt = None,
    json_: JsonOpt = False,
    device: EvalDeviceOpt = "auto",
    batch_size: EvalBatchOpt = 256,
    seed: EvalSeedOpt = 0,
    limit: EvalLimitOpt = None,
    max_iter: MaxIterOpt = None,
    cache: CacheOpt = True,
    init: InitOpt = "trained",
    set_: SetOpt = None,
    threads: ThreadsOpt = "auto",
) -> None:
    """Equivariance profile: affine R² (as eval affine), AugSelf's crop/colour Δ R², 4-way rotation accuracy."""
    _probe("equivariance", ckpt, json_, init, set_, threads, dataset=dataset, seed=seed, limit=limit, device=device,
           batch_size=batch_size, cache=cache, max_iter=max_iter)  # fmt: skip


@app.command("embed", cls=Command)
@friendly
def eval_embed(
    ckpt: CkptArg,
    dataset: EvalDatasetOpt = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", metavar="PNG", help="Default: RUN/eval/embed-<data>.png.")
    ] = None,
    method: Annotated[str, typer.Option(help="auto (umap when umap-learn is installed) | tsne | umap.")] = "auto",
    points: Annotated[int, typer.Option(min=3, metavar="N", help="Test images on the map (a seeded subset).")] = 2000,
    json_: JsonOpt = False,
    device: EvalDeviceOpt = "auto",
    batch_size: EvalBatchOpt = 256,
    seed: EvalSeedOpt = 0,
    cache: CacheOpt = True,
    threads: ThreadsOpt = "auto",
) -> None:
    """A 2-D map (t-SNE or UMAP) of the test features, coloured by class, as a PNG."""
    from affssl import runenv
    from affssl.eval.embed import evaluate_embed

    hostmem.imports_done()
    threads_line = _threads(threads)
    record = evaluate_embed(checkpoint_file(ckpt), dataset=dataset, out=out_path, method=method, points=points,
                            seed=seed, device=device, batch_size=batch_size, cache=cache,
                            progress=err.is_terminal)  # fmt: skip
    runenv.say(threads_line)
    runenv.say(skipped_note(record))
    if json_:
        typer.echo(json.dumps(record))
        return
    result = record["result"]
    line = (f"[green]map[/] {escape(result['png'])} ({result['method']}, {result['points']} test images of "
            f"{escape(record['dataset']['name'])}); record: {escape(record['path'])}")  # fmt: skip
    out.print(line, highlight=False, soft_wrap=True)
