"""The trained model — backbone, base method, affine head — and the loss of one step (design.md §3).

    v1, v2 = views(x)                          # the base method's two augmented views
    h1, h2 = f(v1), f(v2)                      # encoder features (B, F)
    loss_ssl = method(h1, h2, v1, v2)          # projector / predictor / loss of the base
    φ ~ U(ranges); v1t = A_φ(v1); h1t = f(v1t) # the third image, made from view 1 only
    loss = loss_ssl + λ · mse(head(h1 − h1t), target(φ))

The affine term lives here, once; no base method knows about it. With the module off, the third
forward pass is skipped. Each image set goes through the encoder in its own forward pass, as in
the paper, so BatchNorm statistics are per set (x1, x2 and x1t are never mixed in one batch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from affssl import affine, augment
from affssl.backbones import build_backbone
from affssl.methods import build_method
from affssl.spec import RunSpec


class Learner(nn.Module):
    """State-dict keys: backbone.* (the encoder), method.* (projector, predictor, EMA target), head.*"""

    def __init__(self, spec: RunSpec):
        super().__init__()
        self.spec = spec
        self.backbone = build_backbone(spec.backbone, spec.data.image_size_px)
        feat_dim = self.backbone.feat_dim
        self.method = build_method(spec.method, self.backbone, feat_dim)
        if spec.affine.enabled:
            in_dim = feat_dim if spec.affine.location == "encoder" else spec.method.proj_out
            self.head: nn.Module | None = affine.build_head(spec.affine, in_dim)
        else:
            self.head = None

    def forward(self, x: Tensor, g_views: torch.Generator, g_affine: torch.Generator) -> tuple[Tensor, dict]:
        """x: (B, C, H, W) uint8 on the device → total loss and its detached parts."""
        spec = self.spec
        v1, v2 = augment.views(x, spec.augment, g_views)  # (B, C, H, W) float each
        h1, h2 = self.backbone(v1), self.backbone(v2)  # (B, F) each
        out = self.method(h1, h2, v1, v2)
        parts = {"loss_ssl": out.loss.detach()}
        loss = out.loss
        if self.head is not None:
            loss_affine = sum(
                self._affine_term(view, h, z, g_affine)
                for view, h, z in ((v1, h1, out.z1), (v2, h2, out.z2))[: spec.affine.views]
            )
            parts["loss_affine"] = loss_affine.detach()
            loss = loss + spec.affine.weight * loss_affine
        parts["loss"] = loss.detach()
        return loss, parts

    def _affine_term(self, view: Tensor, h: Tensor, z: Tensor, gen: torch.Generator) -> Tensor:
        spec = self.spec.affine
        size_px = view.shape[-1]
        phi = affine.sample(view.shape[0], spec, size_px, gen)  # (B, 6)
        h_warped = self.backbone(affine.warp(view, phi, spec))  # (B, F)
        if spec.location == "projector":
            h, h_warped = z, self.method.embed(h_warped)
        pred = self.head(affine.aggregate(h, h_warped, spec.aggregation))  # (B, k)
        return affine.affine_loss(pred.float(), affine.targets(phi, spec, size_px))

    def param_counts(self) -> dict[str, int]:
        """Trainable parameters per part; the paper reports the head at ≈ 4 % of the total."""
        count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad) if m is not None else 0  # noqa: E731
        counts = {"backbone": count(self.backbone), "method": count(self.method), "head": count(self.head)}
        counts["total"] = sum(counts.values())
        return counts
