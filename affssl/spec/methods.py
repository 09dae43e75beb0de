"""The base methods' specs (SimCLR, BYOL, Barlow Twins, VICReg, MoCo v3, SimSiam), their tagged union
and registry, and each base's default affine weight λ. affssl.spec re-exports every name here.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Annotated, Literal

from pydantic import Field

from affssl.spec.base import FrozenSpec


class SimCLRSpec(FrozenSpec):
    name: Literal["simclr"] = "simclr"
    proj_hidden: int = Field(512, ge=1)
    proj_out: int = Field(128, ge=1)
    temperature: float = Field(0.5, gt=0)


class BYOLSpec(FrozenSpec):
    name: Literal["byol"] = "byol"
    proj_hidden: int = Field(512, ge=1)
    proj_out: int = Field(128, ge=1)
    pred_hidden: int = Field(512, ge=1)
    tau_base: float = Field(0.996, ge=0, le=1, description="EMA τ, cosine-ramped to 1")
    pred_lr_scale: float = Field(
        1.0,
        gt=0,
        description="the predictor's learning rate as a multiple of optim.lr (1: the paper; Tian et al. "
        "2021 (DirectPred) found a faster predictor speeds up non-contrastive learning)",
    )


class BarlowSpec(FrozenSpec):
    name: Literal["barlow"] = "barlow"
    proj_hidden: int = Field(512, ge=1)
    proj_out: int = Field(128, ge=1)
    lambda_offdiag: float = Field(5e-3, ge=0)
    l2_normalize: bool = Field(True, description="the paper L2-normalises projections first")


class VICRegSpec(FrozenSpec):
    """VICReg (Bardes et al. 2022). Published: expander 8192-8192-8192 on ResNet-50's 2048-d features
    (ImageNet) and 2048-2048-2048 on ResNet-18's 512-d ones (CIFAR, solo-learn), λ = μ = 25, ν = 1.
    Here 512-512-512: no wider than the other bases' heads, and not narrower than ResNet-18's features,
    as VICReg's expander ablation loses accuracy quickly below the representation's width."""

    name: Literal["vicreg"] = "vicreg"
    proj_hidden: int = Field(512, ge=1, description="expander hidden width, 2 hidden layers (paper: 8192; CIFAR: 2048)")
    proj_out: int = Field(512, ge=1, description="expander output (paper: 8192; CIFAR: 2048)")
    invariance_weight: float = Field(25.0, ge=0, description="λ on the views' MSE (paper: 25)")
    variance_weight: float = Field(25.0, ge=0, description="μ on the std hinge (paper: 25)")
    covariance_weight: float = Field(1.0, ge=0, description="ν on the off-diagonal covariance (paper: 1)")


class MoCoV3Spec(FrozenSpec):
    """MoCo v3 (Chen et al. 2021), ResNet variant. Published: projector 2-layer 4096 → 256 and predictor
    256 → 4096 → 256, τ = 0.2 (CIFAR, solo-learn; ImageNet ResNet-50 runs use 1.0), m 0.99 cosine-ramped
    to 1. The heads scaled as this project scales BYOL's identical 4096/256 heads: 512/128."""

    name: Literal["mocov3"] = "mocov3"
    proj_hidden: int = Field(512, ge=1, description="projector hidden width (paper: 4096)")
    proj_out: int = Field(128, ge=1, description="projector and predictor output (paper: 256)")
    pred_hidden: int = Field(512, ge=1, description="predictor hidden width (paper: 4096)")
    temperature: float = Field(0.2, gt=0, description="τ of the InfoNCE loss (CIFAR: 0.2)")
    momentum_base: float = Field(0.99, ge=0, le=1, description="momentum-encoder EMA m, cosine-ramped to 1 (0.99)")


class SimSiamSpec(FrozenSpec):
    """SimSiam (Chen & He 2021). Published (ImageNet, ResNet-50): 3-layer projector 2048-2048-2048 with
    an affine-free output BN, predictor bottleneck 2048 → 512 → 2048; its CIFAR runs keep the 2048-d
    output. Scaled by ¼ like this project's other heads (2048 → 512): projector 512-512-512,
    predictor 512 → 128 → 512 (the bottleneck ratio 4 kept)."""

    name: Literal["simsiam"] = "simsiam"
    proj_hidden: int = Field(512, ge=1, description="projector hidden width, 2 hidden layers (paper: 2048)")
    proj_out: int = Field(512, ge=1, description="projector and predictor output (paper: 2048)")
    pred_hidden: int = Field(128, ge=1, description="predictor bottleneck (paper: 512 = output/4)")


MethodSpec = Annotated[
    SimCLRSpec | BYOLSpec | BarlowSpec | VICRegSpec | MoCoV3Spec | SimSiamSpec, Field(discriminator="name")
]
METHOD_SPECS: dict[str, type[FrozenSpec]] = {
    "simclr": SimCLRSpec,
    "byol": BYOLSpec,
    "barlow": BarlowSpec,
    "vicreg": VICRegSpec,
    "mocov3": MoCoV3Spec,
    "simsiam": SimSiamSpec,
}


# Paper §1.6: λ = 1 for SimCLR and BYOL, 10 for Barlow Twins (the run reported as BT + Affine).
# The other bases keep that balance: λ from the base loss's scale at init relative to the affine MSE
# (≈ 0.45 at init). Measured on digits (preset default, batch 128, mean of 3 seeds), base loss ÷
# affine MSE and the ratio of their gradient norms on the backbone: SimCLR 12 / 1.2, BYOL 8.6 / 1.5,
# MoCo v3 9.3 / 1.4 → λ = 1; Barlow 274 / 233 (λ = 10 in the paper); VICReg 53 / 6.6 → λ = 5 brings
# both back to SimCLR's and BYOL's (11 / 1.3). SimSiam's loss is BYOL's ÷ 4 up to a constant
# (−(cos₁ + cos₂)/2 vs 4 − 2(cos₁ + cos₂)), ≈ 0 at init with gradients ¼ of BYOL's (ratio 0.21) → λ = 0.25.
DEFAULT_AFFINE_WEIGHT: dict[str, float] = {
    "simclr": 1.0,
    "byol": 1.0,
    "barlow": 10.0,
    "vicreg": 5.0,
    "mocov3": 1.0,
    "simsiam": 0.25,
}


def unknown_base(name: object) -> str:
    """The message for a base method name that is not one: a did-you-mean when one is close, then the choices."""
    close = get_close_matches(name, METHOD_SPECS, n=1) if isinstance(name, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown base method {name!r}; {hint}choose one of {', '.join(METHOD_SPECS)}"
