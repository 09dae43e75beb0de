"""AugSelf (Lee et al., NeurIPS 2021, arXiv 2111.09613): predict how the two views' augmentations differ.

    p_k = head_k([f(x1); f(x2)])                        # one MLP per augmentation type k, on backbone features
    loss = Σ_k w_k · MSE(tanh(p_k), Δ_k)                # symmetrised: also [f(x2); f(x1)] against −Δ_k

crop Δ (4): centre (y, x) and size (height, width) of view 1's crop box minus view 2's, as fractions of the
source image; a flipped view's x-centre is mirrored (1 − x), each view by its own flip.
colour Δ (4): view 1's minus view 2's (factor − 1)/strength for brightness, contrast and saturation and
hue/strength, each 0 for a view whose jitter was not applied (strength: affssl.spec.AugmentSpec's, e.g. 0.8).

No extra encoder pass: the heads read the features the base method already computed, and the targets come
from the views' own parameters (affssl.augment.ViewParams). Heads: Linear(2d, 512, no bias) → BN → ReLU →
Linear(512, 512, no bias) → BN → ReLU → Linear(512, k), one per type; state dict keys crop.*, colour.*.

    augself = AugSelf(feat_dim=512)
    loss = loss_ssl + λ * augself(h1, h2, augself_targets(p1, p2, augment_spec))
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affssl.augment import ViewParams
from affssl.objectives.step import Step
from affssl.precision import fp32
from affssl.spec import AugmentSpec, AugSelfSpec

TYPES: dict[str, int] = {"crop": 4, "colour": 4}  # augmentation type → number of regressed differences


def head(feat_dim: int, hidden: int, out: int) -> nn.Sequential:
    """AugSelf's predictor: Linear(2d, h, no bias)-BN-ReLU-Linear(h, h, no bias)-BN-ReLU-Linear(h, out)."""
    return nn.Sequential(
        nn.Linear(2 * feat_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out),
    )


def crop_state(p: ViewParams) -> Tensor:
    """(n, 4) centre y, centre x (mirrored where flipped), height, width of each crop, fractions of its source."""
    top, left, h, w = p.box_frac.unbind(1)  # (n,) each
    centre_x = left + w / 2
    centre_x = torch.where(p.flip, 1 - centre_x, centre_x)
    return torch.stack([top + h / 2, centre_x, h, w], 1)


def colour_state(p: ViewParams, spec: AugmentSpec) -> Tensor:
    """(n, 4) (factor − 1)/strength for brightness, contrast, saturation and hue/strength; 0 where not applied."""
    strength = (spec.brightness, spec.contrast, spec.saturation, spec.hue)
    centre = (1.0, 1.0, 1.0, 0.0)  # the factors' identity: ×1 for the blends, a zero hue shift
    f = p.jitter_factors  # (n, 4)
    cols = [(f[:, k] - centre[k]) / s if s > 0 else torch.zeros_like(f[:, k]) for k, s in enumerate(strength)]
    scaled = torch.stack(cols, 1)  # (n, 4); a zero strength never moves its factor
    return torch.where(p.jitter[:, None], scaled, 0.0)


def augself_targets(p1: ViewParams, p2: ViewParams, spec: AugmentSpec) -> dict[str, Tensor]:
    """Each type's Δ, view 1 minus view 2: {"crop": (B, 4), "colour": (B, 4)} float32."""
    return {
        "crop": crop_state(p1) - crop_state(p2),
        "colour": colour_state(p1, spec) - colour_state(p2, spec),
    }


@fp32
def augself_loss(pred: Tensor, target: Tensor) -> Tensor:
    """MSE(tanh(pred), target), pred and target (n, k) → scalar fp32."""
    return F.mse_loss(torch.tanh(pred), target)


class AugSelf(nn.Module):
    """Predict the difference of two views' augmentation parameters from their encoder features.

    Args:
        feat_dim: width of the encoder features (512 for ResNet-18).
        spec: an `AugSelfSpec` (None → the paper's STL-10 defaults: weight 1.0 per type, hidden 512).
    A type with weight 0 has no head and no loss.
    """

    def __init__(self, feat_dim: int, spec: AugSelfSpec | None = None):
        super().__init__()
        self.spec = spec or AugSelfSpec()
        self.weights = {"crop": self.spec.crop_weight, "colour": self.spec.colour_weight}
        for name, k in TYPES.items():
            if self.weights[name] > 0:
                self.add_module(name, head(feat_dim, self.spec.head_hidden, k))

    def forward(self, h1: Tensor, h2: Tensor, targets: Mapping[str, Tensor]) -> Tensor:
        """h1, h2: (B, F) the two views' features; targets: each type's Δ (B, k), view 1 minus view 2 → scalar."""
        pair = torch.cat([torch.cat([h1, h2], 1), torch.cat([h2, h1], 1)])  # (2B, 2F): both orders
        loss = h1.new_zeros((), dtype=torch.float32)
        for name, predictor in self.named_children():
            target = torch.cat([targets[name], -targets[name]]).float()  # (2B, k): the reversed order's Δ is −Δ
            loss = loss + self.weights[name] * augself_loss(predictor(pair), target)
        return loss


def step_loss(block: AugSelf, step: Step, gen: torch.Generator | None) -> Tensor:
    """The learner's call: the base views' features and parameters (no draw, no encoder pass)."""
    p1, p2 = step.params
    return block(*step.h, augself_targets(p1, p2, step.spec.augment))


def build(spec: AugSelfSpec, feat_dim: int, proj_dim: int) -> AugSelf:
    return AugSelf(feat_dim, spec)
