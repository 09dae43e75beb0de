"""The RunSpec and how one is made: TOML files (or bundled presets) plus dotted `--set a.b=c` overrides.

The sections live in affssl.spec.sections, the encoder's in affssl.spec.backbone, the base methods'
in affssl.spec.methods; affssl.spec.tree holds what is done to the raw tree before validation.
Nothing below the CLI handles a raw dict: the CLI turns a TOML file plus overrides into a validated
`RunSpec`, and each module receives the sub-spec it needs.
"""

from __future__ import annotations

import tomllib
from difflib import get_close_matches
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from affssl.spec.backbone import (
    SMALL_VITS,
    STEM_FAMILY,
    WIDTH_RESNETS,
    BackboneSpec,
    default_patch_px,
    vit_patch_px,
)
from affssl.spec.base import FrozenSpec as _Spec
from affssl.spec.methods import (
    DEFAULT_AFFINE_WEIGHT,
    METHOD_SPECS,
    MULTICROP_BASES,
    MethodSpec,
    SimCLRSpec,
    unknown_base,
)
from affssl.spec.objectives import DEFAULT_OBJECTIVE_WEIGHT, AugSelfSpec, CareSpec, RotationSpec
from affssl.spec.sections import PRESETS, AffineSpec, AugmentSpec, DataSpec, OptimSpec, TrainSpec
from affssl.spec.tree import (
    BASES_KEY,
    SpecError,
    apply_override,
    copy_tree,
    flatten,
    merge,
    method_name,
    per_base_tables,
)


class RunSpec(_Spec):
    data: DataSpec = DataSpec()
    augment: AugmentSpec = AugmentSpec()
    affine: AffineSpec = AffineSpec()
    augself: AugSelfSpec = AugSelfSpec()
    rotation: RotationSpec = RotationSpec()
    care: CareSpec = CareSpec()
    backbone: BackboneSpec = BackboneSpec()
    method: MethodSpec = SimCLRSpec()
    optim: OptimSpec = OptimSpec()
    train: TrainSpec = TrainSpec()

    @model_validator(mode="after")
    def _resolve(self) -> RunSpec:
        # Fill what depends on other sections, so the written spec holds the values used.
        updates: dict[str, Any] = {}
        if self.affine.weight is None:
            w = DEFAULT_AFFINE_WEIGHT[self.method.name]
            updates["affine"] = self.affine.model_copy(update={"weight": w})
        for name, table in DEFAULT_OBJECTIVE_WEIGHT.items():  # the other objectives' λ, per base as affine's
            section = getattr(self, name)
            if section.weight is None:
                updates[name] = section.model_copy(update={"weight": table[self.method.name]})
        if self.augment.local_crops and self.method.name not in MULTICROP_BASES:
            raise ValueError(
                f"augment.local_crops = {self.augment.local_crops}, but {self.method.name} has no pairing of "
                f"local views; use {', '.join(MULTICROP_BASES)} or set augment.local_crops=0"
            )
        if self.backbone.cifar_stem is None:
            stem = self.data.image_size_px <= 64 and self.backbone.name.startswith(STEM_FAMILY)
            updates["backbone"] = self.backbone.model_copy(update={"cifar_stem": stem})
        if self.backbone.name in SMALL_VITS:  # the patch side, resolved and checked against the image size
            backbone = updates.get("backbone", self.backbone)
            patch = backbone.patch_px or default_patch_px(self.data.image_size_px)
            if self.data.image_size_px % patch:
                raise ValueError(f"backbone.patch_px {patch} does not divide data.image_size_px "
                                 f"{self.data.image_size_px}; choose a patch side that does")  # fmt: skip
            updates["backbone"] = backbone.model_copy(update={"patch_px": patch})
        if self.augment.local_crops:  # the local views' side, after the patch it must fit
            backbone = updates.get("backbone", self.backbone)
            updates["augment"] = local_size(self.augment, self.data.image_size_px, backbone)
        patch = vit_patch_px(updates.get("backbone", self.backbone))
        side = self.rotation.side_px(self.data.image_size_px)
        if self.rotation.enabled and patch is not None and side % patch:  # E-SSL's small views must tile too
            raise ValueError(f"rotation's small views are {side} px, not a whole number of {self.backbone.name}'s "
                             f"{patch} px patches; set rotation.size_frac so that size_frac × data.image_size_px is "
                             f"a multiple of {patch}")  # fmt: skip
        for key, value in updates.items():
            object.__setattr__(self, key, value)
        return self


def local_size(augment: AugmentSpec, image_size_px: int, backbone: BackboneSpec) -> AugmentSpec:
    """The local views' side resolved: None → 9/16 of the image (solo-learn's 18 px at 32), for a ViT rounded down
    to a whole number of patches (16 px at 32 with 4 px patches); a ViT's patch must divide a side given."""
    patch = vit_patch_px(backbone)
    size = augment.local_size_px
    if size is None:
        size = round(image_size_px * 9 / 16) if patch is None else max(patch, image_size_px * 9 // 16 // patch * patch)
    elif patch is not None and size % patch:
        fits = " or ".join(str(s) for s in sorted({max(patch, size // patch * patch), (size // patch + 1) * patch}))
        raise ValueError(f"augment.local_size_px {size} is not a whole number of {backbone.name}'s {patch} px "
                         f"patches; set augment.local_size_px={fits}")  # fmt: skip
    return augment.model_copy(update={"local_size_px": size})


# ---------------------------------------------------------------------------------------------
# Loading: TOML (a path or a bundled preset) + dotted overrides → validated RunSpec


def read_toml(source: str | Path) -> dict[str, Any]:
    """Read a spec file, or a bundled preset by name (default, paper, cifar10-cpu)."""
    if str(source) in PRESETS:
        text = resources.files("affssl.presets").joinpath(f"{source}.toml").read_text()
        where = f"preset {source!r}"
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist; pass a TOML file or one of: {', '.join(PRESETS)}")
        text, where = path.read_text(), str(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{where} is not valid TOML ({err}); fix the syntax") from None


def build_spec(tree: dict[str, Any], overrides: list[str] = (), source: str | Path | None = None) -> RunSpec:
    """A spec tree (read from `source`, a TOML file or preset, when given) plus dotted overrides → a RunSpec.

    An error the file makes by itself (with no override) names the file.
    """
    try:
        return _build(tree, overrides)
    except SpecError as err:
        if source is None or str(source) in PRESETS:  # a preset's own errors are affssl's, not the user's file
            raise
        if overrides:
            try:
                _build(tree, [])
            except SpecError as own:
                raise SpecError(f"{source}: {own}") from None
            raise
        raise SpecError(f"{source}: {err}") from None


def _build(tree: dict[str, Any], overrides: list[str] = ()) -> RunSpec:
    """A spec tree plus dotted overrides → a validated RunSpec.

    A tree may hold per-base settings, `[bases.<method>]` tables of the same sections (a protocol's
    BYOL learning rate, say): the table of the run's base method is merged over the tree, and the
    overrides are applied over both, so a command line always wins. Every table is validated, used
    or not, so a typo in one surfaces on any run of the file.
    """
    tree = copy_tree(tree)  # deep copy; overrides never touch the source
    overrides = list(overrides)
    scratch = copy_tree(tree)
    for assignment in overrides:  # first pass: which base, and the per-base tables as overridden
        apply_override(scratch, assignment)
    per_base = per_base_tables(scratch.pop(BASES_KEY, {}))
    tree.pop(BASES_KEY, None)
    name = method_name(scratch)
    for other, table in per_base.items():
        if other != name:
            _check_base_table(tree, other, table)
    file_backbone = dict(tree["backbone"]) if isinstance(tree.get("backbone"), dict) else {}
    table = per_base.get(name, {}) if isinstance(name, str) else {}
    merge(tree, table)
    own = [a for a in overrides if a.partition("=")[0].strip().split(".")[0] != BASES_KEY]
    for assignment in own:
        apply_override(tree, assignment)
    _drop_file_backbone_options(tree, file_backbone, own + [f"{k}=" for k in flatten(table)])
    # The method section's discriminator defaults to simclr so a TOML may omit it.
    if isinstance(tree.get("method"), dict):
        tree["method"].setdefault("name", "simclr")
        name = tree["method"]["name"]
        if not isinstance(name, str) or name not in METHOD_SPECS:  # a list or table is no name (found by fuzzing)
            raise SpecError(unknown_base(name))
    try:
        return RunSpec.model_validate(tree)
    except ValidationError as err:
        raise SpecError(describe(err)) from None


def _check_base_table(tree: dict[str, Any], name: str, table: dict[str, Any]) -> None:
    """Validate an unused per-base table as the spec it would make, naming it in the error."""
    probe = copy_tree(tree)
    if method_name(probe) != name:
        probe["method"] = {"name": name}
    merge(probe, table)
    try:
        RunSpec.model_validate(probe)
    except ValidationError as err:
        raise SpecError(f"[{BASES_KEY}.{name}]: {describe(err)}") from None


def _drop_file_backbone_options(tree: dict[str, Any], file_backbone: dict[str, Any], overrides: list[str]) -> None:
    """A file's width and stem belong to its ResNet, its patch to its ViT: an override naming a model that takes
    none drops them."""
    backbone = tree.get("backbone")
    name = backbone.get("name", "resnet18") if isinstance(backbone, dict) else "resnet18"
    if not isinstance(name, str) or name == file_backbone.get("name", "resnet18"):  # a list is no name: validation
        return  # says so (found by fuzzing: backbone.name=[])
    overridden = {a.partition("=")[0].strip() for a in overrides}
    keys = (() if name in WIDTH_RESNETS else ("width", "cifar_stem")) + (() if name in SMALL_VITS else ("patch_px",))
    for key in keys:
        if key in file_backbone and f"backbone.{key}" not in overridden:
            backbone.pop(key, None)


def load_spec(source: str | Path | None = None, overrides: list[str] = ()) -> RunSpec:
    return build_spec(read_toml(source) if source is not None else {}, list(overrides), source)


def field_paths(method: str | None = None) -> list[str]:
    """Every dotted field of a RunSpec ('optim.lr'); the method section's of `method`, else of every base."""
    paths = []
    for section, info in RunSpec.model_fields.items():
        models = [METHOD_SPECS[method]] if method in METHOD_SPECS else list(METHOD_SPECS.values())
        names = dict.fromkeys(n for m in (models if section == "method" else [info.annotation]) for n in m.model_fields)
        paths += [f"{section}.{name}" for name in names]
    return paths


def did_you_mean(key: str, method: str | None = None) -> str:
    """'; did you mean optim.lr?' for an unknown dotted key: the same name in another section, else a close spelling."""
    section, _, leaf = key.rpartition(".")
    if not section:  # an unknown section
        close = get_close_matches(key, list(RunSpec.model_fields), n=1, cutoff=0.6)
        return f"; did you mean {close[0]}?" if close else ""
    paths = field_paths(method)
    leaves = {p.rpartition(".")[2]: p for p in paths if p.startswith(f"{section}.")}
    close = [p for p in paths if p.rpartition(".")[2] == leaf]  # the right name in another section
    close = close or [leaves[n] for n in get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)]  # a misspelling
    close = close or get_close_matches(key, paths, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def describe(err: ValidationError) -> str:
    """One line per problem, each naming the dotted field: 'train.epochs: …'."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(tuple(METHOD_SPECS)))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            method = next((str(p) for p in e["loc"] if str(p) in METHOD_SPECS), None)
            msg = f"unknown key{did_you_mean(loc, method)} (every field: `affssl pretrain --print-spec`)"
        lines.append(f"{loc}: {msg}" if loc else msg.removeprefix("Value error, "))  # a whole-spec rule says its fields
    return "invalid spec: " + "; ".join(lines)


def to_toml(spec: RunSpec) -> str:
    """The spec as a TOML file that `affssl pretrain FILE` reads back to exactly this spec.

    TOML has no null, so fields that are None are left out: their default is None too. A spec that
    would not come back the same (a None where the default is a value) is refused with the field named.
    """
    import tomli_w

    text = tomli_w.dumps(_plain(spec.model_dump(exclude_none=True)))  # python mode keeps inf (JSON's makes it null)
    back = build_spec(tomllib.loads(text))
    if repr(back) != repr(spec):  # repr: a NaN equals itself
        old, new = flatten(spec.model_dump()), flatten(back.model_dump())
        differ = ", ".join(f"{k} = {old.get(k)!r}" for k in sorted(old.keys() | new.keys())
                           if repr(old.get(k)) != repr(new.get(k)))  # fmt: skip
        raise SpecError(f"the spec has no TOML form that reads back the same ({differ}); give those fields a value")
    return text


def _plain(value: Any) -> Any:
    """Paths as strings, through nested tables and arrays: what TOML can hold."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value
