"""The floor and the equal-time baseline of an ablation: what a gain from the affine module is measured against.

Floor ("<base>/floor"): the untrained encoder of the base's spec and seed (affssl.floor), scored by
the same probes; its run folder holds spec.json and an epoch-0 last.safetensors, nothing is trained.

Equal time ("<base>/base-equal-time"): the module adds a third forward pass, so "+ affine beats the
base at equal epochs" could be a gain bought with compute. This baseline gets the same training
time as the reference + affine run of its base and seed. Design: a number of epochs, set from
measured times, not a time budget inside the engine:

    epochs = max(1, round(E_base × t_affine / t_base))

with t the summed `epoch_time_s` of the finished base and + affine runs (metrics.jsonl). The result
is an ordinary run folder whose spec.json states its epochs, so it resumes, is re-evaluated and is
reproduced like any other run, and the same finished runs always give the same epochs (a budget in
seconds would stop at a different step on every machine and every retry, and a killed run could not
be resumed bit-exactly). The price is rounding to whole epochs (at most half an epoch of time);
the ratio and the epochs are written to RUN/match.json and to results.csv (time_ratio).
On the objectives axis each objective has its own equal-time base ("<base>/base-equal-time-<objective>"),
matched to the run of that objective (t_affine_s in match.json is then that run's time).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from affssl import checkpoint, runs
from affssl.ablate.planning import PlannedRun
from affssl.checkpoint import CheckpointError
from affssl.floor import FLOOR_EPOCH
from affssl.spec import RunSpec, build_spec

MATCH = "match.json"


@dataclass(frozen=True)
class Match:
    """How an equal-time run's epochs were set."""

    t_base_s: float  # training seconds of the base run
    t_affine_s: float  # training seconds of the reference + affine run (objectives axis: of the matched run)
    time_ratio: float  # t_affine_s / t_base_s
    base_epochs: int
    epochs: int  # max(1, round(base_epochs × time_ratio))


def target_epoch(run: PlannedRun) -> int:
    """The epoch of a finished run's last checkpoint: 0 for a floor, the spec's epochs otherwise."""
    return FLOOR_EPOCH if run.variant.kind == "floor" else run.spec.train.epochs


def trained_seconds(folder: Path, epochs: int) -> float | None:
    """Summed epoch_time_s of a run that reached `epochs`; None when it has not."""
    try:
        if int(checkpoint.read_header(folder / runs.LAST)["epoch"]) != epochs:
            return None
    except (CheckpointError, KeyError, ValueError):
        return None
    times = {r["epoch"]: r["epoch_time_s"] for r in runs.read_metrics(folder) if r.get("kind") == "epoch"}
    return math.fsum(times.values()) if len(times) == epochs else None


def references(run: PlannedRun, planned: list[PlannedRun]) -> tuple[PlannedRun, PlannedRun]:
    """The base run and the reference + affine run of an equal-time run's base and seed (on the objectives
    axis: the run of the objective it is matched to)."""
    same = [r for r in planned if r.seed == run.seed and r.variant.base == run.variant.base]
    base = next(r for r in same if r.variant.kind == "run" and r.variant.baseline)
    if run.variant.matched is not None:
        return base, next(r for r in same if r.variant.kind == "run" and r.variant.objective == run.variant.matched)
    return base, next(r for r in same if r.variant.reference)


def match(run: PlannedRun, planned: list[PlannedRun], out: Path) -> Match | None:
    """The equal-time epochs from the finished base and + affine runs; None while either is unfinished."""
    base, affine = references(run, planned)
    t_base = trained_seconds(out / base.folder, base.spec.train.epochs)
    t_affine = trained_seconds(out / affine.folder, affine.spec.train.epochs)
    if t_base is None or t_affine is None or t_base <= 0:
        return None
    ratio = t_affine / t_base
    epochs = base.spec.train.epochs
    return Match(t_base, t_affine, ratio, epochs, max(1, round(epochs * ratio)))


def with_epochs(spec: RunSpec, epochs: int, curve_points: int | None) -> RunSpec:
    extra = [f"train.checkpoint_every={max(1, epochs // curve_points)}"] if curve_points else []
    return build_spec(json.loads(spec.model_dump_json()), [f"train.epochs={epochs}", *extra])


def matched(run: PlannedRun, m: Match, curve_points: int | None) -> PlannedRun:
    return replace(run, spec=with_epochs(run.spec, m.epochs, curve_points))


def resolve(planned: list[PlannedRun], out: Path, curve_points: int | None) -> list[PlannedRun]:
    """The plan with every equal-time run's epochs set where its references are finished."""
    resolved = []
    for run in planned:
        m = match(run, planned, out) if run.variant.kind == "equal-time" else None
        resolved.append(matched(run, m, curve_points) if m is not None else run)
    return resolved


def write_match(folder: Path, m: Match) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MATCH).write_text(json.dumps(asdict(m), indent=2) + "\n")
