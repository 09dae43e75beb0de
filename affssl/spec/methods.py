"""The base methods' specs (SimCLR, BYOL, Barlow Twins, VICReg, MoCo v3, SimSiam, DINO), their tagged union
and registry, and each base's default affine weight λ. affssl.spec re-exports every name here.
"""

from __future__ import annotations

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
    loss_scale: float = Field(1.0, gt=0, description="multiplies the loss (solo-learn's CIFAR scale_loss: 0.1)")


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


class DINOSpec(FrozenSpec):
    """DINO (Caron et al. 2021). Published: head = 3-layer MLP 2048 hidden (GELU, no BatchNorm) → 256
    bottleneck, L2-normalised → 65536 weight-normalised prototypes (solo-learn CIFAR: 4096), the last
    layer frozen for the first epoch, student τ 0.1, teacher τ 0.04 → 0.07 over 30 epochs (solo-learn:
    50), centre momentum 0.9, teacher EMA 0.996 → 1 (solo-learn CIFAR: 0.9995). The heads scaled as this
    project scales BYOL's 4096/256 ones: 512 hidden, 128 bottleneck, 1024 prototypes (¼ of 4096)."""

    name: Literal["dino"] = "dino"
    proj_hidden: int = Field(512, ge=1, description="head MLP hidden width, 2 hidden layers (paper: 2048)")
    proj_out: int = Field(128, ge=1, description="L2-normalised bottleneck (paper: 256)")
    prototypes: int = Field(1024, ge=2, description="weight-normalised output units (paper: 65536; CIFAR: 4096)")
    head_bn: bool = Field(False, description="BatchNorm in the head MLP (paper and solo-learn: off)")
    norm_last_layer: bool = Field(True, description="prototypes' norms fixed at 1 (weight_g frozen), as the paper")
    freeze_last_layer_epochs: int = Field(1, ge=0, description="prototypes get no update in these first epochs")
    student_temp: float = Field(0.1, gt=0, description="student softmax temperature (paper: 0.1)")
    teacher_temp: float = Field(0.07, gt=0, description="teacher temperature after the warm-up (paper: 0.04–0.07)")
    teacher_temp_start: float = Field(0.04, gt=0, description="teacher temperature at epoch 0 (paper: 0.04)")
    teacher_temp_warmup_epochs: int = Field(30, ge=0, description="linear warm-up of the teacher temperature (30)")
    center_momentum: float = Field(0.9, ge=0, lt=1, description="EMA of the teacher outputs' centre (paper: 0.9)")
    momentum_base: float = Field(0.996, ge=0, le=1, description="teacher EMA, cosine-ramped to 1 (CIFAR: 0.9995)")


MethodSpec = Annotated[
    SimCLRSpec | BYOLSpec | BarlowSpec | VICRegSpec | MoCoV3Spec | SimSiamSpec | DINOSpec,
    Field(discriminator="name"),
]
METHOD_SPECS: dict[str, type[FrozenSpec]] = {
    "simclr": SimCLRSpec,
    "byol": BYOLSpec,
    "barlow": BarlowSpec,
    "vicreg": VICRegSpec,
    "mocov3": MoCoV3Spec,
    "simsiam": SimSiamSpec,
    "dino": DINOSpec,
}
# The bases that pair local views (augment.local_crops) with the global ones.
MULTICROP_BASES: tuple[str, ...] = ("simclr", "byol", "dino")


# Paper §1.6: λ = 1 for SimCLR and BYOL, 10 for Barlow Twins (the run reported as BT + Affine).
# The other bases keep that balance: λ from the base loss's scale at init relative to the affine MSE
# (≈ 0.45 at init). Measured on digits (preset default, batch 128, mean of 3 seeds), base loss ÷
# affine MSE and the ratio of their gradient norms on the backbone: SimCLR 12 / 1.2, BYOL 8.6 / 1.5,
# MoCo v3 9.3 / 1.4 → λ = 1; Barlow 274 / 233 (λ = 10 in the paper); VICReg 53 / 6.6 → λ = 5 brings
# both back to SimCLR's and BYOL's (11 / 1.3). SimSiam's loss is BYOL's ÷ 4 up to a constant
# (−(cos₁ + cos₂)/2 vs 4 − 2(cos₁ + cos₂)), ≈ 0 at init with gradients ¼ of BYOL's (ratio 0.21) → λ = 0.25.
# DINO: 12 / 0.36 (benchmarks/loss_balance.py --base dino reproduces the others' figures too). Its loss is
# H(q) + KL(q‖p), and the teacher's entropy H(q) (≈ 5 of the 6) sends no gradient, so the gradient ratio
# decides: ≈ ¼ of SimCLR's and BYOL's (1.3) → λ = 0.25. With local views (augment.local_crops) the base
# loss averages more pairs and its backbone gradient shrinks (6 local views, digits: SimCLR 0.38, BYOL 0.50,
# DINO 0.21), so a multi-crop run keeps the two-view balance with about a third of these λ.
DEFAULT_AFFINE_WEIGHT: dict[str, float] = {
    "simclr": 1.0,
    "byol": 1.0,
    "barlow": 10.0,
    "vicreg": 5.0,
    "mocov3": 1.0,
    "simsiam": 0.25,
    "dino": 0.25,
}
