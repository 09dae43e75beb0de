"""An ablation's results: one row per finished run (results.csv), statistics per variant (ablate.summary).

Rows are read back from the run folders only (metrics.jsonl, eval records), so the tables can be
rebuilt at any time. Metric names join protocol and data set: `linear-cifar10` (top-1 %, the mean
over probe trials), `knn-cifar10-k20`, `affine-cifar10-r2` (mean R² over components); the equivariance
profile gives `equivariance-cifar10-affine-r2` (mean over components, each also as `…-affine-r2-<component>`),
`…-crop-r2` and `…-colour-r2` (AugSelf's Δ, mean over columns) and `…-rotation-acc` (4-way, %); and, for
a run trained with heads, each head's own score as trained (affssl.batchstats), kept apart from the metrics
(no base has them to compare with): `…-head-affine-r2-<component>`, `…-head-crop-r2`, `…-head-colour-r2`,
`…-head-rotation-acc` (E-SSL's head on its small views), in results.csv and the summary's heads table.
The statistics unit is a pretraining seed (one value per run) or, as in the paper (§2.4, 5 probe
trials of one checkpoint), a linear-probe trial (every trial of every run of the variant).
Holm–Bonferroni adjusts each comparison column over its family: every + affine variant's p against
its base (for --preset main: one per base), and every reference's p against its equal-time base; on the
objectives axis every + objective variant against its base and against its own equal-time base.
On that axis results.csv also has `objective` and `s_per_step` (batch / img/s: measured seconds per step).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from affssl import runs
from affssl.ablate.planning import EvalSettings, PlannedRun, Variant
from affssl.ablate.runner import curve_checkpoint, curve_epochs, eval_path, read_record
from affssl.ablate.study import MATCH
from affssl.stats import Comparison, Summary, compare, holm, summarize

Unit = Literal["seed", "trial"]
# results.csv: these columns, then one per metric, then `<metric>_trials` (";"-joined probe trials)
FIELDS = ("variant", "base", "affine", "components", "aggregation", "views", "fill", "weight", "location", "seed",
          "epochs", "wall_s", "img_per_s", "eval_s", "params_total", "params_head", "head_overhead_frac",
          "final_loss", "kind", "time_ratio", "run")  # fmt: skip
OBJECTIVE_FIELDS = ("objective", "s_per_step")  # after FIELDS, on the objectives axis only


@dataclass(frozen=True)
class CurvePoint:
    epoch: int
    wall_s: float  # training seconds up to the end of this epoch
    value: float  # linear top-1 %


@dataclass
class Row:
    variant: Variant
    seed: int
    spec_fields: dict[str, str]  # FIELDS values taken from the spec and the run folder
    wall_s: float
    img_per_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    trials: dict[str, list[float]] = field(default_factory=dict)
    curve: list[CurvePoint] = field(default_factory=list)
    heads: dict[str, float] = field(default_factory=dict)  # the run's own heads scored as trained


def collect(planned: list[PlannedRun], out: Path, ev: EvalSettings) -> list[Row]:
    """Rows of the runs that have a checkpoint and every eval record; the others are left out."""
    rows = []
    for run in planned:
        folder = out / run.folder
        records = {(p, d): read_record(eval_path(folder, p, d, run.spec)) for p in ev.protocols for d in ev.datasets}
        if not (folder / runs.LAST).is_file() or any(r is None for r in records.values()):
            continue
        lines = runs.read_metrics(folder)
        epochs = [r for r in lines if r.get("kind") == "epoch"]
        params = next((r for r in lines if r.get("kind") == "params"), {})
        times = [r["epoch_time_s"] for r in epochs]
        wall = math.fsum(times)
        images = math.fsum(r["img_per_s"] * r["epoch_time_s"] for r in epochs)
        fields = _fields(run, params, epochs[-1]["loss"] if epochs else math.nan, folder, out)
        fields["eval_s"] = f"{math.fsum(r.get('timing_s', {}).get('total', 0.0) for r in records.values()):.3f}"
        match = read_record(folder / MATCH) if run.variant.kind == "equal-time" else None
        fields["time_ratio"] = f"{match['time_ratio']:.4f}" if match else ""
        row = Row(run.variant, run.seed, fields, wall, images / wall if wall else math.nan)
        per_step = run.spec.train.batch_size / row.img_per_s if row.img_per_s > 0 else math.nan
        fields["objective"] = run.variant.objective or run.variant.matched or ""
        fields["s_per_step"] = "" if math.isnan(per_step) or run.variant.kind == "floor" else f"{per_step:.6f}"
        for (protocol, dataset), record in records.items():
            _read_metrics(row, protocol, eval_path(folder, protocol, dataset, run.spec).stem, record["result"])
        if ev.curve and run.variant.kind != "floor":  # the floor is a line on the curve plot, not a curve
            row.curve = _curve(run, folder, ev, times, row)
        rows.append(row)
    return rows


def _fields(run: PlannedRun, params: dict, loss: float, folder: Path, out: Path) -> dict[str, str]:
    a = run.spec.affine
    on = a.enabled
    affine = {
        "components": "+".join(a.components),
        "aggregation": a.aggregation,
        "views": str(a.views),
        "fill": a.fill,
        "weight": f"{a.weight:g}",
        "location": a.location,
    }
    return {
        "variant": run.variant.name,
        "base": run.spec.method.name,
        "affine": str(on).lower(),
        **{k: v if on else "" for k, v in affine.items()},
        "seed": str(run.seed),
        "epochs": "0" if run.variant.kind == "floor" else str(run.spec.train.epochs),
        "params_total": str(params.get("total", "")),
        "params_head": str(params.get("head", "")),
        "head_overhead_frac": f"{params['head_overhead_frac']:.5f}" if "head_overhead_frac" in params else "",
        "final_loss": f"{loss:.6g}",
        "kind": run.variant.kind,
        "run": str(folder.relative_to(out)),
    }


def _read_metrics(row: Row, protocol: str, stem: str, result: dict) -> None:
    if protocol == "linear":
        row.metrics[stem] = float(result["top1_pct"])
        row.trials[stem] = [float(t["test_acc_pct"]) for t in result["trials"]]
    elif protocol == "knn":
        row.metrics |= {f"{stem}-k{k}": float(v) for k, v in result["top1_pct"].items()}
    elif protocol == "affine":
        r2 = {c: float(v) for c, v in result["r2"].items()}
        row.metrics[f"{stem}-r2"] = math.fsum(r2.values()) / len(r2)
        row.metrics |= {f"{stem}-r2-{c}": v for c, v in r2.items()}
    elif protocol == "equivariance":
        r2 = {c: float(v) for c, v in result["affine"]["r2"].items()}
        row.metrics[f"{stem}-affine-r2"] = math.fsum(r2.values()) / len(r2)
        row.metrics |= {f"{stem}-affine-r2-{c}": v for c, v in r2.items()}
        row.metrics |= {f"{stem}-{t}-r2": float(v) for t, v in result["augself"]["r2"].items()}
        row.metrics[f"{stem}-rotation-acc"] = float(result["rotation"]["acc_pct"])
        affine, augself = result["affine"].get("r2_head_batch") or {}, result["augself"].get("r2_head_batch") or {}
        row.heads |= {f"{stem}-head-affine-r2-{c}": float(v) for c, v in affine.items()}
        row.heads |= {f"{stem}-head-{t}-r2": float(v) for t, v in augself.items()}
        if (acc := result["rotation"].get("head_acc_pct_batch")) is not None:
            row.heads[f"{stem}-head-rotation-acc"] = float(acc)


def _curve(run: PlannedRun, folder: Path, ev: EvalSettings, times: list[float], row: Row) -> list[CurvePoint]:
    stem = eval_path(folder, "linear", ev.datasets[0], run.spec).stem
    elapsed = [math.fsum(times[: e + 1]) for e in range(len(times))]
    points = []
    for epoch in curve_epochs(folder, run.spec.train.epochs, ev.curve_points):
        record = read_record(curve_checkpoint(folder, epoch).parent / runs.EVAL / f"{stem}.json")
        if record is not None and epoch <= len(elapsed):
            points.append(CurvePoint(epoch, elapsed[epoch - 1], float(record["result"]["top1_pct"])))
    if stem in row.metrics:
        points.append(CurvePoint(run.spec.train.epochs, row.wall_s, row.metrics[stem]))
    return points


def metric_names(rows: list[Row]) -> list[str]:
    """Headline metrics in order of appearance (per-component R² columns stay in the CSV only)."""
    names = dict.fromkeys(m for r in rows for m in r.metrics if "-r2-" not in m)
    return list(names)


def head_names(rows: list[Row]) -> list[str]:
    """The own-head scores any run has, in order of appearance."""
    return list(dict.fromkeys(m for r in rows for m in r.heads))


def write_csv(rows: list[Row], path: Path) -> Path:
    metrics = list(dict.fromkeys(m for r in rows for m in r.metrics))
    heads = head_names(rows)
    trials = list(dict.fromkeys(m for r in rows for m in r.trials))
    objectives = any(r.spec_fields.get("objective") for r in rows)
    columns = FIELDS + (OBJECTIVE_FIELDS if objectives else ())
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, *metrics, *heads, *(f"{m}_trials" for m in trials)])
        for r in rows:
            values = {**r.spec_fields, "wall_s": f"{r.wall_s:.3f}", "img_per_s": f"{r.img_per_s:.1f}"}
            writer.writerow(
                [values[k] for k in columns]
                + [f"{r.metrics[m]:.4f}" if m in r.metrics else "" for m in metrics]
                + [f"{r.heads[m]:.4f}" if m in r.heads else "" for m in heads]
                + [";".join(f"{v:.4f}" for v in r.trials.get(m, [])) for m in trials]
            )
    return path


# ---------------------------------------------------------------------------------------------
# Statistics per variant


@dataclass(frozen=True)
class VariantStats:
    variant: Variant
    values: list[float]
    summary: Summary
    vs_base: Comparison | None  # None for the baseline itself or when no baseline finished
    vs_ref: Comparison | None  # against the base's reference (all components); None for itself and the floor
    wall_s: float  # mean training seconds per run
    img_per_s: float
    vs_equal: Comparison | None = None  # a reference against its base's equal-time baseline
    p_holm_base: float = math.nan  # vs_base.p, Holm-adjusted over the + affine variants
    p_holm_equal: float = math.nan  # vs_equal.p, Holm-adjusted over the references
    vs_floor: Comparison | None = None  # a trained variant against its base's untrained encoder
    step_cost_rel: float = math.nan  # mean s/step over the base's mean s/step (objectives axis; NaN elsewhere)


def samples(rows: list[Row], metric: str, unit: Unit) -> list[float]:
    if unit == "trial":
        return [v for r in rows for v in r.trials.get(metric, [r.metrics[metric]]) if metric in r.metrics]
    return [r.metrics[metric] for r in rows if metric in r.metrics]


def variant_stats(planned: list[PlannedRun], rows: list[Row], metric: str, unit: Unit) -> list[VariantStats]:
    variants = list({r.variant.name: r.variant for r in planned}.values())
    by_name = {v.name: [r for r in rows if r.variant.name == v.name] for v in variants}
    values = {name: samples(rs, metric, unit) for name, rs in by_name.items()}
    out = []
    for v in variants:
        if not values[v.name]:
            continue
        base = values.get(f"{v.base}/base") or None
        equal = values.get(f"{v.base}/base-equal-time" + (f"-{v.objective}" if v.objective else "")) or None
        floor = values.get(f"{v.base}/floor") or None
        ref = next((values[u.name] for u in variants if u.base == v.base and u.reference and values[u.name]), None)
        rs = by_name[v.name]
        out.append(
            VariantStats(
                v,
                values[v.name],
                summarize(values[v.name]),
                None if v.baseline or base is None else compare(values[v.name], base),
                None if v.reference or v.kind == "floor" or ref is None else compare(values[v.name], ref),
                math.fsum(r.wall_s for r in rs) / len(rs),
                math.fsum(r.img_per_s for r in rs) / len(rs),
                compare(values[v.name], equal) if (v.reference or v.objective) and equal is not None else None,
                vs_floor=None if v.kind == "floor" or floor is None else compare(values[v.name], floor),
                step_cost_rel=_step_cost(rs, by_name.get(f"{v.base}/base", [])) if v.objective else math.nan,
            )
        )
    return with_holm(out)


def _step_cost(rows: list[Row], base: list[Row]) -> float:
    """Mean measured seconds per step of a variant's runs over its base's (NaN without both)."""
    mine = [float(r.spec_fields["s_per_step"]) for r in rows if r.spec_fields.get("s_per_step")]
    theirs = [float(r.spec_fields["s_per_step"]) for r in base if r.spec_fields.get("s_per_step")]
    if not mine or not theirs:
        return math.nan
    return (math.fsum(mine) / len(mine)) / (math.fsum(theirs) / len(theirs))


def with_holm(stats: list[VariantStats]) -> list[VariantStats]:
    """Holm-adjusted p of the + affine variants against their base, and of the references against equal time."""
    out = list(stats)
    for attr, target in (("vs_base", "p_holm_base"), ("vs_equal", "p_holm_equal")):
        family = [i for i, s in enumerate(out) if not s.variant.baseline and getattr(s, attr) is not None]
        for i, p in zip(family, holm([getattr(out[i], attr).p for i in family]), strict=True):
            out[i] = replace(out[i], **{target: p})
    return out


ComponentEffect = tuple[str, str, Summary, Summary, Comparison]  # base, component, base R², + affine R², effect


def component_r2(planned: list[PlannedRun], rows: list[Row], stem: str) -> list[ComponentEffect]:
    """Per base and component: R² of the base and of the reference + affine (one value per run), and the
    module's effect (difference of means with its Welch 95 % interval). `stem`: e.g. "affine-cifar10"."""
    head = f"{stem}-r2-"
    out = []
    for base in dict.fromkeys(r.variant.base for r in planned):
        plain = [r for r in rows if r.variant.base == base and r.variant.kind == "run" and r.variant.baseline]
        with_module = [r for r in rows if r.variant.base == base and r.variant.reference]
        components = dict.fromkeys(m.removeprefix(head) for r in plain + with_module for m in r.metrics
                                   if m.startswith(head))  # fmt: skip
        for c in components:
            a = [r.metrics[head + c] for r in plain if head + c in r.metrics]
            b = [r.metrics[head + c] for r in with_module if head + c in r.metrics]
            if a and b:
                out.append((base, c, summarize(a), summarize(b), compare(b, a)))
    return out


def is_r2(metric: str) -> bool:
    """An R² metric (the affine probe's or the equivariance profile's), not an accuracy."""
    return metric.startswith("affine-") or metric.endswith("-r2") or "-r2-" in metric


def unit_label(metric: str) -> str:
    if metric.startswith("affine-") or metric.endswith("-affine-r2"):
        return "mean R² over components"
    if metric.endswith("-r2"):
        return "mean R² over Δ columns"
    return "4-way rotation top-1 %" if metric.endswith("-rotation-acc") else "top-1 %"
