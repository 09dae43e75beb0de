"""Encoders by name: any torchvision classification model with its final classification Linear removed.

resnet18/34/50/101/152 are affssl's own ResNet, built from torchvision's blocks with torchvision's
module tree and key names, plus a width option (at width 64 every tensor shape equals torchvision's).
Every other name is `torchvision.models.get_model(name, weights=None)` itself: no weights are ever
downloaded. Either way the state dict loads (strict) into `torchvision_model(spec)`: torchvision's
model whose final classification `nn.Linear` (the last one in module order with out_features equal
to the number of classes: resnet `fc`, convnext `classifier.2`, mobilenet_v3 `classifier.3`, vit
`heads.head`, …) is `nn.Identity()`, and, for the ResNet family (resnet*, resnext*, wide_resnet*)
with the CIFAR stem, `conv1 = Conv2d(3, 64, 3, 1, 1, bias=False)` and `maxpool = Identity()`.
ViT and MaxViT are built for the data's image size. `vit_tiny` and `vit_small` are
`torchvision.models.VisionTransformer(**torchvision_kwargs(spec, S))`: ViT-Ti (12 layers, 3 heads,
width 192, MLP 768) and ViT-S (12, 6, 384, 1536) with `patch_px` patches at S px, head `heads.head`.
Every ViT is affssl.vit.AnySizeViT (torchvision's class, same state dict): it also takes inputs of another size
that the patch divides (multi-crop's local views), its position embedding resized bicubically.
Each encoder maps (B, 3, S, S) → (B, F) and carries `feat_dim` (F, the in_features of the removed
Linear) and `removed_head` (its dotted name).
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from affssl.errors import UserError
from affssl.spec import SMALL_VITS, STEM_FAMILY, BackboneSpec, default_patch_px
from affssl.vit import AnySizeViT, any_size

ARCHS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}
NUM_CLASSES = 1000  # torchvision's default; the Linear with this many outputs is the one removed
# Builders that need more than weights=None: the input size of the transformers, no auxiliary heads.
SIZE_KWARG = {"vit_": "image_size", "maxvit_": "input_size"}  # name prefix → keyword
EXTRA_KWARGS: dict[str, dict] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


class ResNet(nn.Module):
    """ResNet body and global average pooling: (B, 3, H, W) → (B, feat_dim)."""

    removed_head = "fc"

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        block, layers = ARCHS[spec.name]
        w = spec.width
        if spec.cifar_stem:
            self.conv1 = nn.Conv2d(3, w, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = w
        self.layer1 = self._stage(block, w, layers[0], stride=1)
        self.layer2 = self._stage(block, 2 * w, layers[1], stride=2)
        self.layer3 = self._stage(block, 4 * w, layers[2], stride=2)
        self.layer4 = self._stage(block, 8 * w, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feat_dim = 8 * w * block.expansion
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stage(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        # torchvision's Bottleneck takes base_width to size its 3×3; 64 keeps width = planes.
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, H', W')
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 8w·e, H'/8, W'/8)
        return torch.flatten(self.avgpool(x), 1)  # (B, feat_dim)


def build_backbone(spec: BackboneSpec, image_size_px: int | None = None) -> nn.Module:
    """The encoder trained by affssl; `image_size_px` sizes ViT/MaxViT (None: torchvision's 224)."""
    if spec.name in ARCHS:
        return ResNet(spec)
    return torchvision_model(spec, image_size_px)


def builder_kwargs(name: str, image_size_px: int | None) -> dict:
    """Keyword arguments of `torchvision.models.get_model(name, …)` besides weights=None."""
    kwargs = dict(EXTRA_KWARGS.get(name, {}))
    for prefix, key in SIZE_KWARG.items():
        if name.startswith(prefix) and image_size_px is not None:
            kwargs[key] = image_size_px if key == "image_size" else (image_size_px, image_size_px)
    return kwargs


def torchvision_kwargs(spec: BackboneSpec, image_size_px: int | None) -> dict:
    """Keyword arguments of the torchvision constructor that builds the model: VisionTransformer's for the small
    ViTs (image_size, patch_size and the SMALL_VITS shape), else get_model's besides the name and weights=None."""
    if spec.name not in SMALL_VITS:
        return builder_kwargs(spec.name, image_size_px)
    size = image_size_px or 224  # torchvision's ViT default
    return {"image_size": size, "patch_size": spec.patch_px or default_patch_px(image_size_px), **SMALL_VITS[spec.name]}


def find_head(model: nn.Module, name: str = "model") -> tuple[str, nn.Linear]:
    """(dotted name, layer) of the final classification Linear: the last with NUM_CLASSES outputs."""
    heads = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == NUM_CLASSES]
    if not heads:
        raise UserError(f"backbone {name} has no final nn.Linear classifier to remove; choose another model")
    return heads[-1]


def torchvision_model(spec: BackboneSpec, image_size_px: int | None = None) -> nn.Module:
    """torchvision's model with the same stem and the classification Linear replaced by nn.Identity().

    This is the target of exported weights; it carries `feat_dim` and `removed_head` like ResNet.
    """
    if spec.width != 64:
        raise UserError(f"torchvision's {spec.name} has width 64; this backbone has width {spec.width}")
    try:
        kwargs = torchvision_kwargs(spec, image_size_px)
        if spec.name in SMALL_VITS:
            model = AnySizeViT(**kwargs)
        else:
            model = torchvision.models.get_model(spec.name, weights=None, **kwargs)
        if type(model) is torchvision.models.VisionTransformer:  # vit_b_16, …: any input size too
            model = any_size(model)
    except (AssertionError, ValueError) as err:  # e.g. a ViT image size that the patch size does not divide
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"backbone {spec.name} cannot be built at {image_size_px} px ({first}); change the image size"
        ) from None
    removed, head = find_head(model, spec.name)
    parent, _, leaf = removed.rpartition(".")
    setattr(model.get_submodule(parent), leaf, nn.Identity())
    if spec.cifar_stem and spec.name.startswith(STEM_FAMILY):
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's
        model.maxpool = nn.Identity()
    model.feat_dim = head.in_features
    model.removed_head = removed
    return model


def recipe(spec: BackboneSpec, image_size_px: int | None, removed_head: str) -> str:
    """How to build the torchvision model that loads an export strictly (Python, one line)."""
    if spec.width != 64:
        return f"none: width {spec.width} is not torchvision's 64; load it with affssl.load_backbone(path)"
    args = "".join(f", {k}={v!r}" for k, v in torchvision_kwargs(spec, image_size_px).items())
    steps = [f"m = torchvision.models.get_model({spec.name!r}, weights=None{args})"]
    if spec.name in SMALL_VITS:
        steps = [f"m = torchvision.models.VisionTransformer({args.removeprefix(', ')})"]
    if spec.cifar_stem and spec.name.startswith(STEM_FAMILY):
        steps += ["m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)", "m.maxpool = nn.Identity()"]
    steps.append(f"m.{_attribute_path(removed_head)} = nn.Identity()")
    return "; ".join(steps)


def _attribute_path(dotted: str) -> str:
    """'classifier.3' → 'classifier[3]': the Python spelling of a module path."""
    return "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in dotted.split(".")).lstrip(".")
