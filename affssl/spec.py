"""Run specs: strict, frozen pydantic models, TOML files and dotted `--set a.b=c` overrides.

Every default lives here, once, or in the two spec modules whose names this one re-exports:
affssl.backbone_spec (the encoder) and affssl.method_specs (the base methods, their default λ).
affssl.spec_tree holds what is done to the raw tree before validation (overrides, per-base tables).
Nothing below the CLI handles a raw dict: the CLI turns a TOML file plus overrides into a validated
`RunSpec`, and each module receives the sub-spec it needs.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from affssl.backbone_spec import LIST_BACKBONES as LIST_BACKBONES
from affssl.backbone_spec import STEM_FAMILY, WIDTH_RESNETS, BackboneSpec
from affssl.backbone_spec import classification_models as classification_models
from affssl.method_specs import DEFAULT_AFFINE_WEIGHT, METHOD_SPECS, MethodSpec, SimCLRSpec
from affssl.method_specs import BarlowSpec as BarlowSpec
from affssl.method_specs import BYOLSpec as BYOLSpec
from affssl.method_specs import MoCoV3Spec as MoCoV3Spec
from affssl.method_specs import SimSiamSpec as SimSiamSpec
from affssl.method_specs import VICRegSpec as VICRegSpec
from affssl.spec_base import FrozenSpec as _Spec
from affssl.spec_tree import BASES_KEY, copy_tree, merge, method_name, per_base_tables
from affssl.spec_tree import SpecError as SpecError
from affssl.spec_tree import apply_override as apply_override
from affssl.spec_tree import flatten as flatten
from affssl.spec_tree import parse_value as parse_value

COMPONENTS: tuple[str, ...] = ("rotation", "translation", "scale", "shear")
# Square size used when data.image_size_px is not given (digits are 8×8, upscaled for the CNN).
NATIVE_SIZE_PX = {"digits": 16, "cifar10": 32, "cifar100": 32, "svhn": 32, "stl10": 96,
                  "mnist": 28, "fashion-mnist": 28}  # fmt: skip
PRESETS: tuple[str, ...] = ("default", "paper", "cifar10-cpu")


Range = tuple[float, float]


class DataSpec(_Spec):
    dataset: str = Field(
        "digits", description="digits | cifar10 | cifar100 | stl10 | svhn | mnist | fashion-mnist | PATH"
    )
    image_size_px: int | None = Field(
        None, ge=8, le=512, description="images are resized to this square size; None → the data set's own"
    )
    limit: int | None = Field(None, ge=1, description="train on this many images (stratified when labelled)")
    root: Path | None = Field(None, description="download/cache folder (default ~/.cache/affssl or $AFFSSL_CACHE)")
    cache: bool = Field(True, description="keep decoded uint8 tensors on disk so the next run skips decoding")

    @model_validator(mode="after")
    def _native_size(self) -> DataSpec:
        if self.image_size_px is None:
            object.__setattr__(self, "image_size_px", NATIVE_SIZE_PX.get(self.dataset, 32))
        return self


class AugmentSpec(_Spec):
    """The base methods' views (paper §2.3): crop, flip, colour jitter, grey-scale, blur."""

    crop_scale: Range = (0.08, 1.0)
    crop_ratio: Range = (3 / 4, 4 / 3)
    flip_p: float = Field(0.5, ge=0, le=1)
    jitter_p: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.8, ge=0)
    contrast: float = Field(0.8, ge=0)
    saturation: float = Field(0.8, ge=0)
    hue: float = Field(0.2, ge=0, le=0.5)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    blur_p: Range = Field((1.0, 1.0), description="per view; the paper always blurs")
    blur_sigma: Range = (0.1, 2.0)
    blur_kernel_frac: float = Field(0.1, ge=0, le=1, description="kernel = int(frac·size), as the paper")
    solarize_p: Range = Field((0.0, 0.0), description="per view; BYOL's asymmetric option is (0, 0.2)")

    @field_validator("crop_scale", "crop_ratio", "blur_sigma")
    @classmethod
    def _ordered(cls, v: Range) -> Range:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"needs 0 < low <= high, got {list(v)}")
        return v

    @field_validator("blur_p", "solarize_p")
    @classmethod
    def _probabilities(cls, v: Range) -> Range:
        if not all(0 <= p <= 1 for p in v):
            raise ValueError(f"probabilities must lie in [0, 1], got {list(v)}")
        return v


class AffineSpec(_Spec):
    """The paper's module (§1): sample φ, warp view 1, predict φ from an aggregation of features."""

    enabled: bool = True
    components: tuple[Literal["rotation", "translation", "scale", "shear"], ...] = COMPONENTS
    rotation_deg: float = Field(90.0, ge=0, le=180, description="θ ~ U(-r, r)")
    translate_frac: float = Field(0.25, ge=0, lt=1, description="t ~ round(U(-f·W, f·W)) px")
    scale_range: Range = (0.7, 1.3)
    shear_deg: float = Field(25.0, ge=0, lt=90, description="shear x, y ~ U(-s, s)")
    interpolation: Literal["nearest", "bilinear"] = "nearest"
    fill: Literal["black", "bounded"] = "black"
    aggregation: Literal["diff", "concat"] = "diff"
    views: Literal[1, 2] = 1
    location: Literal["encoder", "projector"] = "encoder"
    weight: float | None = Field(None, ge=0, description="λ; None → per base (DEFAULT_AFFINE_WEIGHT)")
    head_hidden: int = Field(512, ge=1)
    target: Literal["paper", "standardized"] = "paper"

    @field_validator("components")
    @classmethod
    def _canonical(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"needs at least one of {', '.join(COMPONENTS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"components repeat: {list(v)}")
        return tuple(c for c in COMPONENTS if c in v)

    @field_validator("scale_range")
    @classmethod
    def _scale(cls, v: Range) -> Range:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"needs 0 < low <= high, got {list(v)}")
        return v


class OptimSpec(_Spec):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0)


class TrainSpec(_Spec):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=2)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int = Field(10, ge=1, description="also keep epoch-NNNN.safetensors every N epochs")
    log_every: int = Field(10, ge=1, description="steps between metric lines (each one syncs the device)")
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="also write RUN/last.safetensors every N steps inside an epoch (resumable exactly)"
    )
    max_loss: float | None = Field(
        1e6,
        gt=0,
        description="stop the run when the loss passes this (a non-finite loss always stops it); the bases' losses "
        "stay below ~1e4 and the affine MSE near 1, so 1e6 only catches a run that has diverged; inf: off",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32"
    )
    memory_format: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="activations' layout; auto: channels_last (measured faster on CPU and CUDA)"
    )
    compile: bool = False
    sync_bn: bool = Field(
        True,
        description="with several processes, BatchNorm statistics over the global "
        "batch (as one process); off: each process normalises its slice",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # Specs written before 0.2 carry `amp` and `channels_last`; read them as the fields that replaced them.
        if isinstance(data, dict) and ("amp" in data or "channels_last" in data):
            data = dict(data)
            if "amp" in data:
                data.setdefault("precision", "auto" if data.pop("amp") else "fp32")
            if "channels_last" in data:
                data.setdefault("memory_format", "auto" if data.pop("channels_last") else "contiguous")
        return data


class RunSpec(_Spec):
    data: DataSpec = DataSpec()
    augment: AugmentSpec = AugmentSpec()
    affine: AffineSpec = AffineSpec()
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
        if self.backbone.cifar_stem is None:
            stem = self.data.image_size_px <= 64 and self.backbone.name.startswith(STEM_FAMILY)
            updates["backbone"] = self.backbone.model_copy(update={"cifar_stem": stem})
        for key, value in updates.items():
            object.__setattr__(self, key, value)
        return self


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


def build_spec(tree: dict[str, Any], overrides: list[str] = ()) -> RunSpec:
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
            raise SpecError(f"unknown base method {name!r}; choose one of {', '.join(METHOD_SPECS)}")
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
    """A file's width and stem belong to its ResNet: an override naming a model without a width drops them."""
    backbone = tree.get("backbone")
    name = backbone.get("name", "resnet18") if isinstance(backbone, dict) else "resnet18"
    if name == file_backbone.get("name", "resnet18") or name in WIDTH_RESNETS:
        return
    overridden = {a.partition("=")[0].strip() for a in overrides}
    for key in ("width", "cifar_stem"):
        if key in file_backbone and f"backbone.{key}" not in overridden:
            backbone.pop(key, None)


def load_spec(source: str | Path | None = None, overrides: list[str] = ()) -> RunSpec:
    return build_spec(read_toml(source) if source is not None else {}, list(overrides))


def describe(err: ValidationError) -> str:
    """One line per problem, each naming the dotted field: 'train.epochs: …'."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(tuple(METHOD_SPECS)))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling (see `affssl pretrain --print-spec`)"
        lines.append(f"{loc or 'spec'}: {msg}")
    return "invalid spec: " + "; ".join(lines)
