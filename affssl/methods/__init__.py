"""Base SSL methods: a dict registry matched one-to-one by the tagged union in spec.py.

A method is an nn.Module built as `cls(spec, backbone, feat_dim)` with
`forward(h1, h2, v1, v2) -> StepOut` (h: backbone features, v: the views' images),
`embed(h) -> z` (projector output as its loss sees it) and `after_step(backbone, progress)`.
The backbone is passed in, never stored (BYOL, MoCo v3 and DINO keep a separate EMA copy).
The bases of MULTICROP_BASES also take `forward(..., local)`, the local views' features (M·B, F).
Optional hooks, called by the engine when defined: `start_epoch(epoch)` before an epoch's first step
and `before_update()` between the backward pass and the optimizer step (DINO's per-epoch schedules).
"""

from torch import nn

from affssl.methods.barlow import BarlowTwins
from affssl.methods.base import StepOut
from affssl.methods.byol import BYOL
from affssl.methods.dino import DINO
from affssl.methods.mocov3 import MoCoV3
from affssl.methods.simclr import SimCLR
from affssl.methods.simsiam import SimSiam
from affssl.methods.vicreg import VICReg
from affssl.spec import MethodSpec

METHODS: dict[str, type[nn.Module]] = {
    "simclr": SimCLR,
    "byol": BYOL,
    "barlow": BarlowTwins,
    "vicreg": VICReg,
    "mocov3": MoCoV3,
    "simsiam": SimSiam,
    "dino": DINO,
}


def build_method(spec: MethodSpec, backbone: nn.Module, feat_dim: int) -> nn.Module:
    return METHODS[spec.name](spec, backbone, feat_dim)


__all__ = ["METHODS", "StepOut", "build_method"]
