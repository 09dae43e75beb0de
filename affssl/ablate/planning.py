"""An ablation's plan: presets, variants and the (variant, seed) runs, each with its validated spec.

An ablation is base methods × variants × seeds. A variant is a list of dotted overrides on the base
spec: the baseline turns the affine module off; every other variant picks a subset of the listed
components and one value per extra axis (aggregation, views, fill, weight, location). Each
(variant, seed) is an ordinary run folder OUT/<variant>/seed-<s>/ (design.md, run directory
contract), listed with its spec in OUT/ablate.json before any run starts.

Two extra kinds of variant per base (affssl.ablate.study): the floor (`--floor`, "<base>/floor") and
the equal-time baseline (`--match-time`, "<base>/base-equal-time").

With `--objectives` the study axis is the auxiliary objectives instead (design.md decision 18): per base,
the base with every objective off ("<base>/base"), the base + one objective ("<base>/<objective>"), and with
`--match-time` one equal-time base per objective ("<base>/base-equal-time-<objective>"), trained for that
variant's measured time. Components, subsets and axes belong to the affine study and are refused beside it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from affssl.errors import UserError
from affssl.spec import AUX, COMPONENTS, METHOD_SPECS, RunSpec
from affssl.spec.methods import unknown_base

ABLATE_FORMAT = "affssl.ablate/1"
PLAN = "ablate.json"
Subsets = Literal["together", "singles", "all"]
SUBSETS: tuple[str, ...] = ("together", "singles", "all")
AXES: dict[str, str] = {  # extra axis → the AffineSpec field it sets
    "aggregation": "affine.aggregation",
    "views": "affine.views",
    "fill": "affine.fill",
    "weight": "affine.weight",
    "location": "affine.location",
}
LABEL: dict[str, Callable[[str], str]] = {  # how an axis value appears in a variant's folder name
    "aggregation": str,
    "views": lambda v: f"views{v}",
    "fill": str,
    "weight": lambda v: f"w{v}",
    "location": str,
}
PAPER_BASES: tuple[str, ...] = ("simclr", "byol", "barlow")


@dataclass(frozen=True)
class Preset:
    """The structure of one of the paper's tables; explicit flags override its fields."""

    about: str
    subsets: Subsets = "together"
    axes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    bases: tuple[str, ...] = PAPER_BASES


PRESETS: dict[str, Preset] = {
    "main": Preset("§3.1 baseline vs + affine (all four components)"),
    "components": Preset("§3.3 each component alone vs all four", subsets="singles"),
    "aggregation": Preset("§3.4 vector difference vs concatenation", axes=(("aggregation", ("diff", "concat")),)),
    "views": Preset("§3.5 affine on one view vs both views", axes=(("views", ("1", "2")),)),
    "fill": Preset("§3.6 black fill vs bounded crop", axes=(("fill", ("black", "bounded")),)),
    "weight": Preset("§1.6/§3.2 Barlow Twins with λ = 10 vs λ = 1", axes=(("weight", ("10", "1")),), bases=("barlow",)),
    "location": Preset(
        "§3.7 encoder vs projector output (no results in the paper)", axes=(("location", ("encoder", "projector")),)
    ),
}
PROTOCOLS: tuple[str, ...] = ("linear", "knn", "affine", "equivariance")


@dataclass(frozen=True)
class EvalSettings:
    """How every finished checkpoint is evaluated (affssl.eval entry points)."""

    protocols: tuple[str, ...] = ("linear",)
    datasets: tuple[str | None, ...] = (None,)  # None: the checkpoint's own data set
    trials: int = 5
    limit: int | None = None
    max_iter: int | None = None
    batch_size: int = 256
    seed: int = 0  # the same probe seeds for every run, so variants meet the same splits
    curve: bool = False  # also probe every periodic epoch-NNNN checkpoint (linear, first data set)
    curve_points: int | None = None  # with curve: N points per run; checkpoint_every = max(1, epochs // N)


@dataclass(frozen=True)
class Ablation:
    bases: tuple[str, ...]
    components: tuple[str, ...]
    subsets: Subsets
    axes: tuple[tuple[str, tuple[str, ...]], ...]  # (axis, values); the first value is the reference
    seeds: tuple[int, ...]
    eval: EvalSettings = field(default_factory=EvalSettings)
    preset: str | None = None
    floor: bool = False  # per base: the untrained encoder's scores ("<base>/floor")
    match_time: bool = False  # per base: the baseline trained for the reference + affine run's time
    objectives: tuple[str, ...] = ()  # the objectives axis: per base, the base + each of these (AUX order)


@dataclass(frozen=True)
class Variant:
    name: str  # folder under OUT: "simclr/base", "simclr/affine-scale+shear-concat"
    base: str
    components: tuple[str, ...]  # () for the baseline
    axes: tuple[tuple[str, str], ...]  # (axis, value) for each ablated axis
    overrides: tuple[str, ...]
    reference: bool  # all listed components with each axis at its first value
    kind: Literal["run", "floor", "equal-time"] = "run"
    objective: str | None = None  # the objectives axis: the objective this run adds to its base
    matched: str | None = None  # the objectives axis: the objective whose run's time an equal-time base gets

    @property
    def baseline(self) -> bool:
        return not self.components and self.objective is None


@dataclass(frozen=True)
class PlannedRun:
    variant: Variant
    seed: int
    spec: RunSpec

    @property
    def folder(self) -> Path:
        return Path(self.variant.name) / f"seed-{self.seed}"


def split_list(text: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else ()


def make_ablation(
    *,
    default_base: str,
    first_seed: int,
    preset: str | None = None,
    bases: str | None = None,
    components: str | None = None,
    subsets: str | None = None,
    axes: dict[str, str | None] | None = None,
    seeds: int = 1,
    eval_settings: EvalSettings = EvalSettings(),
    floor: bool = False,
    match_time: bool = False,
    objectives: str | None = None,
) -> Ablation:
    """Validate the comma lists of the command line and merge them over a preset."""
    chosen_objectives = split_list(objectives)
    if chosen_objectives:
        _check_objectives(chosen_objectives, preset, components, subsets, axes)
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset] if preset else Preset("", subsets="singles", bases=(default_base,))
    chosen_bases = split_list(bases) or p.bases
    if len(set(chosen_bases)) != len(chosen_bases):
        raise UserError(f"--base repeats a method: {','.join(chosen_bases)}")
    for b in chosen_bases:
        if b not in METHOD_SPECS:
            raise UserError(f"--base: {unknown_base(b)}")
    comps = split_list(components) or COMPONENTS
    for c in comps:
        if c not in COMPONENTS:
            raise UserError(f"unknown component {c!r} in --components; choose from {', '.join(COMPONENTS)}")
    if len(set(comps)) != len(comps):
        raise UserError(f"--components repeats a name: {','.join(comps)}")
    chosen_subsets = subsets or p.subsets
    if chosen_subsets not in SUBSETS:
        raise UserError(f"--subsets {chosen_subsets!r}: choose together, singles or all")
    merged = dict(p.axes) | {k: split_list(v) for k, v in (axes or {}).items() if split_list(v)}
    for axis, values in merged.items():
        if axis not in AXES:
            raise UserError(f"unknown axis {axis!r}; choose from {', '.join(AXES)}")
        if len(set(values)) != len(values):
            raise UserError(f"--{axis} repeats a value: {','.join(values)}")
    for protocol in eval_settings.protocols:
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown --eval protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if eval_settings.curve_points is not None and eval_settings.curve_points < 1:
        raise UserError(f"--curve-points must be at least 1, got {eval_settings.curve_points}")
    axes_t = tuple((a, merged[a]) for a in AXES if a in merged)  # canonical axis order
    seed_t = tuple(range(first_seed, first_seed + seeds))
    ordered = tuple(c for c in COMPONENTS if c in comps)
    objectives_t = tuple(o for o in AUX if o in chosen_objectives)
    return Ablation(chosen_bases, ordered, chosen_subsets, axes_t, seed_t, eval_settings, preset, floor,  # type: ignore[arg-type]
                    match_time, objectives_t)  # fmt: skip


def _check_objectives(names: tuple[str, ...], preset, components, subsets, axes) -> None:
    """--objectives: known names, once each, and no option of the affine study beside them."""
    for name in names:
        if name not in AUX:
            raise UserError(f"unknown objective {name!r} in --objectives; choose from {', '.join(AUX)}")
    if len(set(names)) != len(names):
        raise UserError(f"--objectives repeats a name: {','.join(names)}")
    extra = [f"--{k}" for k, v in (axes or {}).items() if split_list(v)]
    extra += ["--preset"] * (preset is not None) + ["--components"] * bool(components) + ["--subsets"] * bool(subsets)
    if extra:
        raise UserError(f"--objectives compares the objectives with each other; {extra[0]} belongs to the affine "
                        "module's study: run it in an ablation of its own")  # fmt: skip


def component_sets(components: tuple[str, ...], subsets: Subsets) -> list[tuple[str, ...]]:
    """All listed components together first, then singles, then (for 'all') the other subsets by size."""
    sets = [components]
    if subsets in ("singles", "all"):
        sets += [(c,) for c in components]
    if subsets == "all":
        sets += [s for k in range(2, len(components)) for s in itertools.combinations(components, k)]
    return list(dict.fromkeys(sets))  # one component: "together" is its single


def variants(ablation: Ablation) -> list[Variant]:
    """Per base: [the floor,] the baseline, every component set × every axis combination[, the equal-time base].

    With objectives: per base, [the floor,] the baseline, base + each objective[, an equal-time base per objective].
    """
    if ablation.objectives:
        return objective_variants(ablation)
    out: list[Variant] = []
    names = [a for a, _ in ablation.axes]
    off = ("affine.enabled=false",)
    for base in ablation.bases:
        if ablation.floor:
            out.append(Variant(f"{base}/floor", base, (), (), off, False, "floor"))
        out.append(Variant(f"{base}/base", base, (), (), off, False))
        for comps in component_sets(ablation.components, ablation.subsets):
            tag = "all" if set(comps) == set(COMPONENTS) else "+".join(comps)
            for values in itertools.product(*(v for _, v in ablation.axes)):
                pairs = tuple(zip(names, values, strict=True))
                name = f"{base}/affine-{tag}" + "".join(f"-{LABEL[a](v)}" for a, v in pairs)
                overrides = (
                    "affine.enabled=true",
                    f"affine.components={json.dumps(list(comps))}",
                    *(f"{AXES[a]}={v}" for a, v in pairs),
                )
                first = all(v == vals[0] for v, (_, vals) in zip(values, ablation.axes, strict=True))
                out.append(Variant(name, base, comps, pairs, overrides, first and comps == ablation.components))
        if ablation.match_time:  # last of its base: it needs the base and reference runs' training times
            out.append(Variant(f"{base}/base-equal-time", base, (), (), off, False, "equal-time"))
    return out


def objective_variants(ablation: Ablation) -> list[Variant]:
    """The objectives axis: every objective off in the base, exactly one on in each variant."""

    def switches(on: str | None) -> tuple[str, ...]:
        return tuple(f"{name}.enabled={str(name == on).lower()}" for name in AUX)

    out: list[Variant] = []
    for base in ablation.bases:
        if ablation.floor:
            out.append(Variant(f"{base}/floor", base, (), (), switches(None), False, "floor"))
        out.append(Variant(f"{base}/base", base, (), (), switches(None), False))
        out += [Variant(f"{base}/{o}", base, (), (), switches(o), False, objective=o) for o in ablation.objectives]
        if ablation.match_time:  # last of its base: they need the base and objective runs' training times
            out += [Variant(f"{base}/base-equal-time-{o}", base, (), (), switches(None), False, "equal-time",
                            matched=o) for o in ablation.objectives]  # fmt: skip
    return out


SpecBuilder = Callable[[str, list[str]], RunSpec]  # (base method, extra overrides) → validated spec


def plan(ablation: Ablation, build: SpecBuilder) -> list[PlannedRun]:
    """Every (variant, seed), seeds outermost so an interrupted ablation has whole seeds done first.

    Every spec is built (and so validated) here, before any run starts; an equal-time run's epochs are
    set later from measured times (affssl.ablate.study.resolve). With `curve_points` N, every run keeps
    a checkpoint every max(1, epochs // N) epochs, and its curve is min(N, epochs) of them, the last
    epoch included (affssl.ablate.runner.curve_epochs).
    """

    def spec(v: Variant, s: int) -> RunSpec:
        made = build(v.base, [*v.overrides, f"train.seed={s}"])
        if ablation.eval.curve_points is None:
            return made
        every = max(1, made.train.epochs // ablation.eval.curve_points)
        return build(v.base, [*v.overrides, f"train.seed={s}", f"train.checkpoint_every={every}"])

    return [PlannedRun(v, s, spec(v, s)) for s in ablation.seeds for v in variants(ablation)]


def write_plan(out: Path, ablation: Ablation, planned: list[PlannedRun]) -> Path:
    """OUT/ablate.json: the resolved ablation and every run's overrides and spec, written first."""
    from affssl import __version__

    out.mkdir(parents=True, exist_ok=True)
    record = {
        "format": ABLATE_FORMAT,
        "affssl_version": __version__,
        "ablation": asdict(ablation),
        "runs": [
            {
                "variant": r.variant.name,
                "seed": r.seed,
                "folder": str(r.folder),
                "reference": r.variant.reference,
                "kind": r.variant.kind,
                "objective": r.variant.objective or r.variant.matched,
                "overrides": list(r.variant.overrides),
                "spec": json.loads(r.spec.model_dump_json()),
            }
            for r in planned
        ],
    }
    path = out / PLAN
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path
