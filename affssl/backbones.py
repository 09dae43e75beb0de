"""Encoders: torchvision's ResNet-18/50 blocks with a CIFAR-stem option and a width option.

The module tree and key names are those of `torchvision.models.resnet18/50` without `fc`, so a
backbone's state dict loads into torchvision (strict) after the same stem change:
`conv1 = Conv2d(3, 64, 3, 1, 1, bias=False)`, `maxpool = Identity()`, `fc = Identity()`.
At width 64 every tensor shape equals torchvision's; other widths scale every stage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from affssl.spec import BackboneSpec

ARCHS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNet(nn.Module):
    """ResNet body and global average pooling: (B, 3, H, W) → (B, feat_dim)."""

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


def build_backbone(spec: BackboneSpec) -> ResNet:
    return ResNet(spec)


def torchvision_model(spec: BackboneSpec) -> nn.Module:
    """The torchvision ResNet with the same stem and no fc: the target of exported weights."""
    import torchvision

    if spec.width != 64:
        raise ValueError(f"torchvision ResNets have width 64; this backbone has width {spec.width}")
    model = getattr(torchvision.models, spec.name)(weights=None)
    if spec.cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model
