"""Executing an ablation plan: each run folder is left alone, resumed, restarted or evaluated.

State of OUT/<variant>/seed-<s>/, decided from files only (so a killed ablation is completed by
calling it again):
    no spec.json or no last.safetensors      → train from scratch (partial contents are replaced)
    last.safetensors epoch < spec epochs     → resume from it (engine.pretrain(resume=True))
    eval records missing or stale            → evaluate (RUN/eval/<protocol>-<dataset>.json)
    otherwise                                → done, skipped
A folder whose spec.json differs from the planned spec is an error: it belongs to another ablation.
A floor's "training" writes its epoch-0 checkpoint (affssl.floor); an equal-time run gets its epochs
from its base and + affine runs when they are finished (affssl.ablate.study), just before it starts.
Periodic checkpoints (epoch-NNNN.safetensors) are probed with `--curve`; each is hard-linked into
RUN/curve/epoch-NNNN/ so that its eval record lands in its own folder, not over the final one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import affssl.eval as evaluation
from affssl import checkpoint, engine, floor, runenv, runlock, runs
from affssl.ablate import study
from affssl.ablate.planning import EvalSettings, PlannedRun
from affssl.checkpoint import CheckpointError
from affssl.data import Dataset, load_dataset, storage
from affssl.errors import UserError
from affssl.eval.features import slug
from affssl.spec import RunSpec, flatten

CURVE = "curve"
State = Literal["train", "resume", "evaluate", "done"]
Phase = Literal["skip", "train", "resume", "evaluate", "curve", "done"]
# Fields a run may change between calls (as `affssl pretrain --resume` allows); epochs may only grow.
MUTABLE = ("train.device", "train.log_every", "train.checkpoint_every", "train.epochs", "train.threads")


@dataclass(frozen=True)
class Event:
    """Progress of one run, for the command's display."""

    index: int  # 1-based position in the plan
    total: int
    run: PlannedRun
    phase: Phase
    seconds: float = 0.0  # "done": time this call spent on the run


Reporter = Callable[[Event], None]


def execute(planned: list[PlannedRun], out: Path, ev: EvalSettings, report: Reporter = lambda e: None) -> None:
    """Bring every planned run to "done", one after another in plan order; finished runs cost one header read.
    Several at once: affssl.ablate.parallel.execute_parallel (affssl.ablate.pipeline.run chooses by --jobs)."""
    cache: dict[str, Dataset] = {}  # the last loaded training data (runs are ordered seed-outermost)
    for i, run in enumerate(planned, 1):
        t0 = time.perf_counter()
        run, state, m = prepare(run, planned, out, ev)
        if state == "done":
            report(Event(i, len(planned), run, "skip"))
            continue
        advance(run, out, ev, state, m, cache, lambda phase, i=i, run=run: report(Event(i, len(planned), run, phase)))
        report(Event(i, len(planned), run, "done", time.perf_counter() - t0))


def prepare(
    run: PlannedRun, planned: list[PlannedRun], out: Path, ev: EvalSettings
) -> tuple[PlannedRun, State, study.Match | None]:
    """The run as it will execute (an equal-time run gets its epochs here), its state and its match."""
    m = None
    if run.variant.kind == "equal-time":
        m = study.match(run, planned, out)
        if m is None:
            raise UserError(f"{run.folder}: its base and + affine runs are not finished; run the ablation again")
        run = study.matched(run, m, ev.curve_points)
    return run, run_state(run, out / run.folder, ev), m


def advance(
    run: PlannedRun,
    out: Path,
    ev: EvalSettings,
    state: State,
    m: study.Match | None,
    cache: dict[str, Dataset],
    phase: Callable[[Phase], None] = lambda p: None,
) -> None:
    """Train or resume (as `state` says), then evaluate and probe the curve: the run ends "done"."""
    folder = out / run.folder
    if state in ("train", "resume"):
        phase(state)
        train(run, folder, resume=state == "resume", data=_data(run.spec, cache))
    if m is not None:
        study.write_match(folder, m)  # after train(): a fresh start empties the folder
    runenv.set_threads(run.spec.train.threads)  # probes at the run's count (a worker's share), trained now or not
    phase("evaluate")
    evaluate(run, folder, ev)
    if ev.curve:
        phase("curve")
        evaluate_curve(run, folder, ev)


def _data(spec: RunSpec, cache: dict[str, Dataset]) -> Dataset:
    # The engine would load the same: load_dataset(spec.data, seed=spec.train.seed); the seed only
    # matters when a --limit subset is drawn.
    key = spec.data.model_dump_json() + (f"/{spec.train.seed}" if spec.data.limit is not None else "")
    if key not in cache:
        cache.clear()
        cache[key] = load_dataset(spec.data, seed=spec.train.seed)
    return cache[key]


def run_state(run: PlannedRun, folder: Path, ev: EvalSettings) -> State:
    saved = check_folder(run, folder)
    last = folder / runs.LAST
    if saved is None or not last.is_file():
        return "train"
    if run.variant.kind == "floor":
        return "evaluate" if pending(run, folder, ev) else "done"
    try:
        epoch = int(checkpoint.read_header(last)["epoch"])
    except (CheckpointError, KeyError, ValueError):
        return "train"
    planned = run.spec.train.epochs
    if epoch > planned:
        raise UserError(
            f"{folder} was trained for {epoch} epoch{'s' * (epoch != 1)}, this ablation plans {planned}; "
            "choose another --out, or ask for at least as many --epochs"
        )
    if epoch < planned:
        return "resume"
    return "evaluate" if pending(run, folder, ev) else "done"


def train(run: PlannedRun, folder: Path, resume: bool, data: Dataset | None = None) -> Path:
    """Train (or resume) one run folder while holding its lock, as `affssl pretrain` does; a live holder refuses."""
    with runlock.hold(folder):  # before anything in the folder is replaced
        if run.variant.kind == "floor":
            runs.prepare(folder, resume=False, overwrite=True)
            return floor.write_floor(run.spec, folder, data)
        if resume:
            runs.write_spec(folder, run.spec)  # a MUTABLE field (epochs, device) may have changed
        else:
            runs.prepare(folder, resume=False, overwrite=True)  # a killed start: replace what it left
        return engine.pretrain(run.spec, folder, resume=resume, show_progress=False, data=data)


def evaluate(run: PlannedRun, folder: Path, ev: EvalSettings) -> None:
    for protocol in ev.protocols:
        for dataset in ev.datasets:
            path = eval_path(folder, protocol, dataset, run.spec)
            if not current(read_record(path), study.target_epoch(run), ev, protocol):
                probe(protocol, folder / runs.LAST, dataset, ev, run.spec.train.device, expect=path)


def evaluate_curve(run: PlannedRun, folder: Path, ev: EvalSettings) -> None:
    """Linear probe of the curve's periodic checkpoints before the last epoch (the last is the main eval)."""
    for epoch in curve_epochs(folder, run.spec.train.epochs, ev.curve_points):
        link = curve_checkpoint(folder, epoch)
        path = link.parent / runs.EVAL / eval_path(folder, "linear", ev.datasets[0], run.spec).name
        if current(read_record(path), epoch, ev, "linear"):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            try:
                os.link(runs.epoch_checkpoint(folder, epoch), link)
            except OSError:
                shutil.copy2(runs.epoch_checkpoint(folder, epoch), link)
        probe("linear", link, ev.datasets[0], ev, run.spec.train.device, expect=path)


def probe(protocol: str, ckpt: Path, dataset: str | None, ev: EvalSettings, device: str, expect: Path) -> dict:
    """One affssl.eval entry point; it writes the record next to the checkpoint."""
    fn = getattr(evaluation, f"evaluate_{protocol}")  # looked up per call (tests patch it)
    options: dict = {
        "dataset": dataset,
        "seed": ev.seed,
        "limit": ev.limit,
        "device": device,
        "batch_size": ev.batch_size,
    }
    if protocol == "linear":
        options |= {"trials": ev.trials, "max_iter": ev.max_iter}
    elif protocol == "equivariance":
        options |= {"max_iter": ev.max_iter}
    record = fn(ckpt, **options)
    if Path(record["path"]).resolve() != expect.resolve():
        raise RuntimeError(f"affssl.eval wrote {record['path']}, ablate looks for {expect}")
    return record


# ---------------------------------------------------------------------------------------------
# Where things are, and whether they are current


def eval_path(folder: Path, protocol: str, dataset: str | None, spec: RunSpec) -> Path:
    return folder / runs.EVAL / f"{protocol}-{slug(dataset or spec.data.dataset)}.json"


def curve_checkpoint(folder: Path, epoch: int) -> Path:
    return folder / CURVE / f"epoch-{epoch:04d}" / runs.epoch_checkpoint(folder, epoch).name


def curve_epochs(folder: Path, epochs: int, points: int | None = None) -> list[int]:
    """The periodic checkpoints before the last epoch to probe (the last is the main eval).

    All of them, or with `points` N the N − 1 nearest to k · epochs / N (k = 1 … N − 1; ties to the
    later epoch), so that with the last epoch the curve has N points as evenly spaced as the kept
    checkpoints allow: 6 epochs, N = 4 → 2, 3, 5 (+ 6).
    """
    found = (p.stem.removeprefix("epoch-") for p in folder.glob("epoch-*.safetensors"))
    kept = sorted(e for e in (int(s) for s in found if s.isdigit()) if e < epochs)
    if points is None or len(kept) < points:
        return kept
    chosen: list[int] = []
    for k in range(1, points):
        target = k * epochs / points
        chosen.append(min((e for e in kept if e not in chosen), key=lambda e: (abs(e - target), -e)))
    return sorted(chosen)


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def current(record: dict | None, epoch: int, ev: EvalSettings, protocol: str) -> bool:
    """Does an eval record describe this epoch's checkpoint, probed with these settings?"""
    if record is None:
        return False
    try:
        seeds = record["seeds"]
        same = int(record["checkpoint"]["epoch"]) == epoch and record["dataset"]["limit"] == ev.limit
        if protocol == "linear":
            same &= len(seeds) == ev.trials and seeds[0] == ev.seed
            same &= ev.max_iter is None or record["options"].get("max_iter") == ev.max_iter
        elif protocol == "knn":
            same &= seeds == [ev.seed]
        elif protocol == "equivariance":
            same &= seeds[-1] == ev.seed and record["options"].get("max_iter") == ev.max_iter
        return bool(same)
    except (KeyError, TypeError, ValueError, IndexError):
        return False


def pending(run: PlannedRun, folder: Path, ev: EvalSettings) -> bool:
    epochs = study.target_epoch(run)
    for protocol in ev.protocols:
        for dataset in ev.datasets:
            if not current(read_record(eval_path(folder, protocol, dataset, run.spec)), epochs, ev, protocol):
                return True
    if ev.curve:
        name = eval_path(folder, "linear", ev.datasets[0], run.spec).name
        for epoch in curve_epochs(folder, epochs, ev.curve_points):
            path = curve_checkpoint(folder, epoch).parent / runs.EVAL / name
            if not current(read_record(path), epoch, ev, "linear"):
                return True
    return False


def spec_conflicts(saved: RunSpec, planned: RunSpec) -> list[str]:
    """Dotted fields where a run folder's spec differs from the planned one (MUTABLE ones excepted)."""
    a, b = flatten(json.loads(saved.model_dump_json())), flatten(json.loads(planned.model_dump_json()))
    return [k for k in sorted(a.keys() | b.keys())
            if k not in MUTABLE and a.get(k) != b.get(k) and not storage.filled_in(k, b.get(k))]  # fmt: skip


def check_folder(run: PlannedRun, folder: Path) -> RunSpec | None:
    """The spec saved in a run folder (None: nothing usable yet); UserError when it is another run's."""
    path = folder / runs.SPEC
    if not path.is_file():
        return None
    try:
        tree = json.loads(path.read_text())
    except ValueError:
        return None  # cut short while being written: the folder is restarted
    try:
        saved = RunSpec.model_validate(tree)
    except ValueError:
        raise UserError(f"{path} is not a spec this affssl can read; choose another --out") from None
    if conflicts := spec_conflicts(saved, run.spec):
        raise UserError(
            f"{folder} holds a run of another spec (differing: {', '.join(conflicts[:4])}); this ablation "
            "plans a different one — choose another --out (or delete that folder)"
        )
    return saved
