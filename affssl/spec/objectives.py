"""The auxiliary objectives' spec sections beside `affine` (AugSelf, E-SSL's rotation prediction, CARE), each with
its paper's defaults, and each objective's default weight λ per base method (affssl.objectives, docs/prior-art.md).

Every section is off by default; `--aux affine,augself,rotation,care` (or `--set augself.enabled=true`) turns them
on, in any combination. A section's `weight` None resolves per base from its table below when the spec is built.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from affssl.spec.base import FrozenSpec as _Spec
from affssl.spec.methods import DEFAULT_AFFINE_WEIGHT

# The objectives' names: the RunSpec's section of each, the registry's key (affssl.objectives), its loss part
# (loss_<name>) and, for those that draw, its random stream (affssl.streams).
AUX: tuple[str, ...] = ("affine", "augself", "rotation", "care")


class AugSelfSpec(_Spec):
    """AugSelf (Lee et al., NeurIPS 2021): from [f(x1); f(x2)] (symmetrised), one MLP per augmentation type
    regresses the difference of the two views' parameters; MSE(tanh(p), Δ) per type. Defaults: the STL-10 setting."""

    enabled: bool = False
    crop_weight: float = Field(1.0, ge=0, description="crop Δ (centre y, x; height, width): 1.0 (STL-10), 0.5 (IN-100)")
    colour_weight: float = Field(1.0, ge=0, description="colour Δ (brightness, contrast, saturation, hue): as crop")
    head_hidden: int = Field(512, ge=1, description="hidden width of each head (paper: 512)")
    weight: float | None = Field(None, ge=0, description="λ on the sum of the types; None → per base")


class RotationSpec(_Spec):
    """E-SSL (Dangovski et al., ICLR 2022): a small third view, rotated by 0/90/180/270° (all four, one encoder
    pass), and a head that classifies the rotation (cross-entropy). Defaults: the CIFAR-10 setting."""

    enabled: bool = False
    size_frac: float = Field(
        0.5, gt=0, le=1, description="the small view's side as a fraction of data.image_size_px (CIFAR: 16 px at 32)"
    )
    crop_scale: tuple[float, float] = Field((0.2, 1.0), description="the small view's crop area range (CIFAR)")
    head_hidden: int = Field(2048, ge=1, description="hidden width of the head (paper: 2048)")
    weight: float | None = Field(None, ge=0, description="λ; None → per base (SimCLR 0.4, SimSiam 0.08, Barlow 8)")

    @field_validator("crop_scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError(f"needs 0 < low <= high <= 1, got {list(v)}")
        return v

    def side_px(self, image_size_px: int) -> int:
        """The small view's side at this training size: round(size_frac · size), at least 1 px."""
        return max(1, round(self.size_frac * image_size_px))


class CareSpec(_Spec):
    """CARE (Gupta et al. 2023): two extra views in which one augmentation draw is shared by every image of a
    chunk of the batch; the draw must act as an orthogonal map on the L2-normalised projector outputs (no head)."""

    enabled: bool = False
    chunks: int = Field(16, ge=1, description="chunks of the batch, each sharing one draw (CIFAR-10: 16)")
    weight: float | None = Field(None, ge=0, description="λ; None → per base (SimCLR on CIFAR-10: 0.03)")


def _balanced(published: dict[str, float], simclr: float) -> dict[str, float]:
    """The paper's λ where it published one; for the other bases SimCLR's λ times the balance the affine module
    measured between that base's loss and SimCLR's (DEFAULT_AFFINE_WEIGHT ÷ SimCLR's, see affssl.spec.methods)."""
    scaled = {base: simclr * w / DEFAULT_AFFINE_WEIGHT["simclr"] for base, w in DEFAULT_AFFINE_WEIGHT.items()}
    return scaled | published


# AugSelf: 1.0 on every base its code runs (SimSiam, MoCo, SimCLR, BYOL; STL-10); Barlow, VICReg, DINO balanced.
# E-SSL: 0.4 SimCLR (CIFAR and ImageNet), 0.08 SimSiam, 8 Barlow Twins (ImageNet READMEs); the others balanced
#   (BYOL, MoCo v3 0.4; VICReg 2; DINO 0.1; SimSiam's balanced 0.1 is close to its published 0.08).
# CARE: 0.03 for SimCLR on CIFAR-10 with 16 chunks (its paper; MoCo v2 uses the same loss); the others balanced.
DEFAULT_OBJECTIVE_WEIGHT: dict[str, dict[str, float]] = {
    "augself": _balanced({"simclr": 1.0, "byol": 1.0, "mocov3": 1.0, "simsiam": 1.0}, 1.0),
    "rotation": _balanced({"simclr": 0.4, "simsiam": 0.08, "barlow": 8.0}, 0.4),
    "care": _balanced({"simclr": 0.03}, 0.03),
}
