"""The encoder's spec: a torchvision classification model by name, checked against torchvision's list.

affssl.spec re-exports every name here; affssl.backbones builds the model.
"""

from __future__ import annotations

import re
from difflib import get_close_matches
from functools import cache

from pydantic import Field, field_validator, model_validator

from affssl.spec.base import FrozenSpec

# affssl's own ResNets (torchvision's blocks and key names) take a width; every other name is built by
# torchvision.models.get_model. The CIFAR stem applies to the models of torchvision's ResNet class.
WIDTH_RESNETS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
STEM_FAMILY: tuple[str, ...] = ("resnet", "resnext", "wide_resnet")  # name prefixes
LIST_BACKBONES = 'python -c "import torchvision.models as m; print(m.list_models(module=m))"'
# The small ViTs DINO and its successors train (Touvron et al. 2021's DeiT-Ti/S shapes), built as torchvision's
# VisionTransformer with these keyword arguments plus image_size and patch_size.
SMALL_VITS: dict[str, dict[str, int]] = {
    "vit_tiny": {"num_layers": 12, "num_heads": 3, "hidden_dim": 192, "mlp_dim": 768},
    "vit_small": {"num_layers": 12, "num_heads": 6, "hidden_dim": 384, "mlp_dim": 1536},
}
SMALL_IMAGE_PX = 64  # up to this side a small ViT takes 4 px patches (8×8 tokens at 32 px), above it 16 px


def default_patch_px(image_size_px: int | None) -> int:
    """The patch side of vit_tiny/vit_small when backbone.patch_px is not given: 4 px for images up to 64 px
    (CIFAR at 32 px: 8×8 tokens, as the CIFAR ViT recipes), else 16 px (ViT-S/16 at 224 px, as DINO)."""
    return 4 if image_size_px is not None and image_size_px <= SMALL_IMAGE_PX else 16


def vit_patch_px(spec: BackboneSpec) -> int | None:
    """The patch side of a ViT encoder (vit_tiny/vit_small: patch_px, once resolved; vit_b_16, vit_h_14…: the
    number in the name), None for any other model."""
    if spec.name in SMALL_VITS:
        return spec.patch_px
    vit = re.fullmatch(r"vit_[a-z]_(\d+)", spec.name)
    return int(vit.group(1)) if vit else None


@cache
def classification_models() -> tuple[str, ...]:
    """torchvision's classification model names (imported on first use: torchvision takes seconds)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


class BackboneSpec(FrozenSpec):
    """The encoder: a torchvision classification model by name, its final classification Linear removed.

    `width` applies to resnet18/34/50/101/152 (affssl's own ResNet); `cifar_stem` to the ResNet family
    (resnet*, resnext*, wide_resnet*: the models of torchvision's ResNet class). Other models take
    neither; ViT and MaxViT are built for data.image_size_px. `vit_tiny` and `vit_small` (SMALL_VITS) are
    torchvision's VisionTransformer at ViT-Ti/ViT-S size with `patch_px` pixel patches.
    """

    name: str = Field("resnet18", description="a torchvision classification model: resnet18, convnext_tiny, vit_b_16…")
    width: int = Field(
        64, ge=4, description="channels of the first stage (resnet18/34/50/101/152); 64 is torchvision's"
    )
    cifar_stem: bool | None = Field(
        None, description="3×3 stride-1 conv1, no max-pool (ResNet family only); None → image ≤ 64 px for those"
    )
    patch_px: int | None = Field(
        None, ge=1, description="vit_tiny/vit_small: patch side; None → 4 for images up to 64 px, else 16"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v in WIDTH_RESNETS or v in SMALL_VITS or v in classification_models():  # common names skip torchvision
            return v
        close = get_close_matches(v, (*SMALL_VITS, *classification_models()), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown backbone {v!r}; {hint}list torchvision's classification models with: {LIST_BACKBONES} "
            f"(affssl adds {', '.join(SMALL_VITS)})"
        )

    @model_validator(mode="after")
    def _applies(self) -> BackboneSpec:
        if self.width != 64 and self.name not in WIDTH_RESNETS:
            resnets = "resnet" + "/".join(n.removeprefix("resnet") for n in WIDTH_RESNETS)  # resnet18/34/…
            raise ValueError(f"width {self.width} applies to {resnets} only; drop backbone.width for {self.name}")
        if self.cifar_stem and not self.name.startswith(STEM_FAMILY):
            raise ValueError(f"the CIFAR stem applies to the ResNet family only; set cifar_stem=false for {self.name}")
        if self.patch_px is not None and self.name not in SMALL_VITS:
            raise ValueError(f"patch_px applies to {' and '.join(SMALL_VITS)} only; drop backbone.patch_px for "
                             f"{self.name}")  # fmt: skip
        return self
