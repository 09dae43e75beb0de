"""The trained model — backbone, base method, affine head — and the loss of one step (design.md §3).

    v1, v2 = views(x)                          # the base method's two augmented views
    h1, h2 = f(v1), f(v2)                      # encoder features (B, F)
    loss_ssl = method(h1, h2, v1, v2)          # projector / predictor / loss of the base
                                               # (multi-crop: + f(local_views(x)), all local views at once)
    φ ~ U(ranges); v1t = A_φ(v1); h1t = f(v1t) # the third image, made from view 1 only
    loss = loss_ssl + λ · mse(head(h1 − h1t), target(φ))

The affine term is the public block `affssl.AffineEstimation`, stored as `self.head` (its state
dict is the head's: head.0.weight, …); no base method knows about it. With the module off, the
third forward pass is skipped. Each image set goes through the encoder in its own forward pass, as
in the paper, so BatchNorm statistics are per set (x1, x2 and x1t are never mixed in one batch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from affssl import augment
from affssl.affine_block import AffineEstimation
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
            self.head: AffineEstimation | None = AffineEstimation(in_dim, spec=spec.affine)
        else:
            self.head = None

    def forward(self, x: Tensor, g_views: torch.Generator, g_affine: torch.Generator,
                sizes: Tensor | None = None) -> tuple[Tensor, dict]:  # fmt: skip
        """x: (B, C, H, W) uint8 on the device → total loss and its detached parts.

        sizes (B, 2): x holds whole images of these (height, width), zero-padded (the chunks storage);
        the views are then cropped from each whole image and resized to data.image_size_px.
        """
        spec = self.spec
        if sizes is None:
            v1, v2 = augment.views(x, spec.augment, g_views)  # (B, C, H, W) float each
        else:
            v1, v2 = augment.views(x, spec.augment, g_views, sizes, spec.data.image_size_px)  # (B, C, S, S) each
        h1, h2 = self.backbone(v1), self.backbone(v2)  # (B, F) each
        if spec.augment.local_crops:  # multi-crop: every local view in one more forward pass
            local = self.backbone(augment.local_views(x, spec.augment, g_views, sizes))  # (M·B, F)
            out = self.method(h1, h2, v1, v2, local)
        else:
            out = self.method(h1, h2, v1, v2)
        parts = {"loss_ssl": out.loss.detach()}
        loss = out.loss
        if self.head is not None:
            encoder, pairs = self.backbone, ((v1, h1), (v2, h2))  # the block reads encoder features…
            if spec.affine.location == "projector":  # …or the projector's, through backbone then embed
                encoder, pairs = self.embedded, ((v1, out.z1), (v2, out.z2))
            loss_affine = sum(self.head(encoder, view, h, g_affine) for view, h in pairs[: spec.affine.views])
            parts["loss_affine"] = loss_affine.detach()
            loss = loss + spec.affine.weight * loss_affine
        parts["loss"] = loss.detach()
        return loss, parts

    def start_epoch(self, epoch: int) -> None:
        """Before an epoch's first step: a base's per-epoch schedules (DINO's teacher temperature, frozen layer)."""
        if hook := getattr(self.method, "start_epoch", None):
            hook(epoch)

    def before_update(self) -> None:
        """Between the backward pass and the optimizer step: a base may drop gradients (DINO's frozen prototypes)."""
        if hook := getattr(self.method, "before_update", None):
            hook()

    def embedded(self, view: Tensor) -> Tensor:
        """The projector-location encoder: view (B, C, H, W) → method.embed(backbone(view)) (B, D)."""
        return self.method.embed(self.backbone(view))

    def optim_groups(self) -> list[dict]:
        """Trainable parameters as optimizer groups, each with the lr_scale that multiplies the scheduled rate.

        A base method may set lr_scales = {submodule: multiple} (BYOL's predictor); the rest is one group at
        scale 1, listed first, so a run without scaling has the single group it always had.
        """
        prefixes = {f"method.{name}.": s for name, s in getattr(self.method, "lr_scales", {}).items()}
        groups: dict[float, list[nn.Parameter]] = {1.0: []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                scale = next((s for prefix, s in prefixes.items() if name.startswith(prefix)), 1.0)
                groups.setdefault(scale, []).append(p)
        return [{"params": params, "lr_scale": scale} for scale, params in groups.items() if params]

    def param_counts(self) -> dict[str, int]:
        """Trainable parameters per part; the paper reports the head at ≈ 4 % of the total."""
        count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad) if m is not None else 0  # noqa: E731
        counts = {"backbone": count(self.backbone), "method": count(self.method), "head": count(self.head)}
        counts["total"] = sum(counts.values())
        return counts
