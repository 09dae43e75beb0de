"""Run specs: strict, frozen pydantic models, TOML files and dotted `--set a.b=c` overrides.

One job per module: base (the frozen, strict model every spec derives from), sections (data, views,
affine module, optimizer, training loop), backbone (the encoder), methods (the base methods and their
default λ), tree (the raw tree before validation: overrides, per-base tables) and run (the RunSpec,
presets and TOML loading). This module re-exports the names the rest of affssl uses.
"""

from affssl.spec.backbone import (
    LIST_BACKBONES,
    SMALL_VITS,
    STEM_FAMILY,
    WIDTH_RESNETS,
    BackboneSpec,
    classification_models,
    default_patch_px,
    vit_patch_px,
)
from affssl.spec.methods import (
    DEFAULT_AFFINE_WEIGHT,
    METHOD_SPECS,
    MULTICROP_BASES,
    BarlowSpec,
    BYOLSpec,
    DINOSpec,
    MethodSpec,
    MoCoV3Spec,
    SimCLRSpec,
    SimSiamSpec,
    VICRegSpec,
)
from affssl.spec.objectives import AUX, DEFAULT_OBJECTIVE_WEIGHT, AugSelfSpec, CareSpec, RotationSpec
from affssl.spec.run import RunSpec, build_spec, describe, load_spec, read_toml
from affssl.spec.sections import (
    COMPONENTS,
    NATIVE_SIZE_PX,
    PRESETS,
    AffineSpec,
    AugmentSpec,
    DataSpec,
    OptimSpec,
    Range,
    TrainSpec,
)
from affssl.spec.tree import SpecError, apply_override, flatten, parse_value

__all__ = [
    "AUX",
    "COMPONENTS",
    "DEFAULT_AFFINE_WEIGHT",
    "DEFAULT_OBJECTIVE_WEIGHT",
    "LIST_BACKBONES",
    "METHOD_SPECS",
    "MULTICROP_BASES",
    "NATIVE_SIZE_PX",
    "PRESETS",
    "SMALL_VITS",
    "STEM_FAMILY",
    "WIDTH_RESNETS",
    "AffineSpec",
    "AugSelfSpec",
    "AugmentSpec",
    "BYOLSpec",
    "BackboneSpec",
    "BarlowSpec",
    "CareSpec",
    "DINOSpec",
    "DataSpec",
    "MethodSpec",
    "MoCoV3Spec",
    "OptimSpec",
    "Range",
    "RotationSpec",
    "RunSpec",
    "SimCLRSpec",
    "SimSiamSpec",
    "SpecError",
    "TrainSpec",
    "VICRegSpec",
    "apply_override",
    "build_spec",
    "classification_models",
    "default_patch_px",
    "describe",
    "flatten",
    "load_spec",
    "parse_value",
    "read_toml",
    "vit_patch_px",
]
