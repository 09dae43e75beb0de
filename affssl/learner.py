"""The trained model — backbone, base method, auxiliary objectives — and the loss of one step (design.md §3).

    v1, v2 = views(x)                          # the base method's two augmented views
    h1, h2 = f(v1), f(v2)                      # encoder features (B, F)
    loss_ssl = method(h1, h2, v1, v2)          # projector / predictor / loss of the base
                                               # (multi-crop: + f(local_views(x)), all local views at once)
    φ ~ U(ranges); v1t = A_φ(v1); h1t = f(v1t) # the third image, made from view 1 only
    loss = loss_ssl + λ · mse(head(h1 − h1t), target(φ))
         (+ λ_augself · loss_augself + λ_rotation · loss_rotation + λ_care · loss_care)

Each auxiliary objective (affssl.objectives: affine, augself, rotation, care) is a public block whose
`step_loss` reads the step's views, features and projector outputs (affssl.objectives.Step); the
learner sums whichever are on, each a named part (loss_<name>), and no base method knows about any
of them. The affine block is stored as `self.head` (state dict head.0.weight, …, as before the other
objectives); the others under objectives.<name>.*. An objective that is off costs nothing: no
encoder pass, no draw, no view parameters. Each image set goes through the encoder in its own
forward pass, as in the paper, so BatchNorm statistics are per set (x1, x2 and x1t are never mixed).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from affssl import augment
from affssl.affine_block import AffineEstimation
from affssl.backbones import build_backbone
from affssl.methods import build_method
from affssl.objectives import OBJECTIVES, Step
from affssl.spec import AUX, RunSpec


class Learner(nn.Module):
    """State-dict keys: backbone.* (the encoder), method.* (projector, predictor, EMA target), head.* (the affine
    module), objectives.<name>.* (the other objectives' heads: augself, rotation; CARE has none)."""

    def __init__(self, spec: RunSpec):
        super().__init__()
        self.spec = spec
        self.backbone = build_backbone(spec.backbone, spec.data.image_size_px)
        feat_dim = self.backbone.feat_dim
        self.method = build_method(spec.method, self.backbone, feat_dim)
        dims = (feat_dim, spec.method.proj_out)  # what an objective may read: encoder or projector outputs
        on = {name for name in AUX if getattr(spec, name).enabled}
        self.head: AffineEstimation | None = OBJECTIVES["affine"].build(spec.affine, *dims) if "affine" in on else None
        # built after the affine head, so the weights of runs without them start where they always did
        others = [name for name in AUX[1:] if name in on]
        self.objectives = nn.ModuleDict({name: OBJECTIVES[name].build(getattr(spec, name), *dims) for name in others})

    def aux(self) -> list[tuple[str, nn.Module]]:
        """The objectives that are on, (name, block) in AUX's order: affine, augself, rotation, care."""
        blocks = {"affine": self.head, **self.objectives}
        return [(name, blocks[name]) for name in AUX if blocks.get(name) is not None]

    def forward(self, x: Tensor, g_views: torch.Generator,
                g_objectives: Mapping[str, torch.Generator] | torch.Generator | None,
                sizes: Tensor | None = None) -> tuple[Tensor, dict]:  # fmt: skip
        """x: (B, C, H, W) uint8 on the device → total loss and its detached parts.

        g_objectives: each objective's own stream by name (affssl.streams.objective_generators); a lone
        generator is the affine one (the call before the other objectives); None: the device's global one.
        sizes (B, 2): x holds whole images of these (height, width), zero-padded (the chunks storage);
        the views are then cropped from each whole image and resized to data.image_size_px.
        """
        spec, aux = self.spec, self.aux()
        size_args = () if sizes is None else (sizes, spec.data.image_size_px)
        params = None
        if any(OBJECTIVES[name].needs_params for name, _ in aux):  # the same pixels and draws, with parameters
            v1, v2, *params = augment.views_with_params(x, spec.augment, g_views, *size_args)  # (B, C, S, S) each
        else:
            v1, v2 = augment.views(x, spec.augment, g_views, *size_args)  # (B, C, S, S) float each
        h1, h2 = self.backbone(v1), self.backbone(v2)  # (B, F) each
        if spec.augment.local_crops:  # multi-crop: every local view in one more forward pass
            local = self.backbone(augment.local_views(x, spec.augment, g_views, sizes))  # (M·B, F)
            out = self.method(h1, h2, v1, v2, local)
        else:
            out = self.method(h1, h2, v1, v2)
        parts = {"loss_ssl": out.loss.detach()}
        loss = out.loss
        if aux:
            step = Step(spec, x, sizes, (v1, v2), tuple(params) if params else None, (h1, h2), (out.z1, out.z2),
                        self.backbone, self.embedded)  # fmt: skip
            gens = g_objectives if isinstance(g_objectives, Mapping) else {"affine": g_objectives}
            for name, block in aux:
                part = OBJECTIVES[name].step_loss(block, step, gens.get(name))
                parts[f"loss_{name}"] = part.detach()
                loss = loss + getattr(spec, name).weight * part
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
        """Trainable parameters per part (head: the affine module's; objectives: the others'); the paper reports
        the affine head at ≈ 4 % of the total."""
        count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad) if m is not None else 0  # noqa: E731
        counts = {"backbone": count(self.backbone), "method": count(self.method), "head": count(self.head),
                  "objectives": count(self.objectives)}  # fmt: skip
        counts["total"] = sum(counts.values())
        return counts
