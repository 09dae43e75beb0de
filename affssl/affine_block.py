"""`AffineEstimation`: the paper's module as a drop-in block for any PyTorch training loop.

    aff = AffineEstimation(feat_dim=512)              # the paper's defaults (affssl.spec.AffineSpec)
    loss = loss_ssl + λ * aff(encoder, view, h)        # h = encoder(view), view (B, C, H, W) float

One call samples φ per image, warps the view, encodes the warp, aggregates (h − h_warped by
default), predicts φ with the head and returns the MSE against the paper's targets, in fp32.
affssl's own training loop (learner.py) calls this same block, so there is one implementation.

The block's parameters are the head's layers and nothing else; its state dict is that of the
MLP `Linear → BatchNorm1d → ReLU → Linear` (keys 0.weight, 0.bias, 1.*, 3.weight, 3.bias).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from affssl import affine
from affssl.errors import UserError
from affssl.spec import AffineSpec, SpecError, describe


class AffineParts(NamedTuple):
    """What one call computed, for logging and inspection (`return_parts=True`)."""

    loss: Tensor  # scalar fp32 MSE(pred, target)
    phi: Tensor  # (B, 6) angle_deg, tx_px, ty_px, scale, shear_x_deg, shear_y_deg
    warped: Tensor  # (B, C, H, W) the warped view
    pred: Tensor  # (B, k) the head's prediction in fp32, k = number of target columns
    target: Tensor  # (B, k) the regression target encoding φ


def default_generator(device: torch.device) -> torch.Generator:
    """The global generator of a device, so `torch.manual_seed` makes φ reproducible without one passed."""
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    seed = int(torch.randint(2**62, (), generator=torch.default_generator))  # other devices: seeded from the CPU's
    return torch.Generator(device=device).manual_seed(seed)


class AffineEstimation(nn.Module):
    """Predict the affine map between a view and its warp from encoder features (Torpey & Klein, 2024).

    Args:
        feat_dim: width of the features the encoder returns (512 for ResNet-18, 2048 for ResNet-50).
        spec: a complete `AffineSpec`; or leave it None and give any of the keyword options below,
            which are `AffineSpec`'s fields of the same name (None → the paper's default there).
        components: subset of ("rotation", "translation", "scale", "shear") to sample and predict.
        rotation_deg, translate_frac, scale_range, shear_deg: the sampling ranges of φ.
        aggregation: "diff" (h − h_warped) or "concat" ([h; h_warped]).
        fill: "black" (zeros outside the image) or "bounded" (largest valid rectangle, resized back).
        interpolation: "nearest" or "bilinear".
        head_hidden: hidden width of the head.
        target: "paper" ([θ/360, tx/W, ty/H, σ, sx/25, sy/25]) or "standardized".

    The spec's engine fields (enabled, views, location, weight) are the training loop's, not the block's.
    """

    def __init__(
        self,
        feat_dim: int,
        *,
        spec: AffineSpec | None = None,
        components: tuple[str, ...] | list[str] | None = None,
        rotation_deg: float | None = None,
        translate_frac: float | None = None,
        scale_range: tuple[float, float] | None = None,
        shear_deg: float | None = None,
        aggregation: Literal["diff", "concat"] | None = None,
        fill: Literal["black", "bounded"] | None = None,
        interpolation: Literal["nearest", "bilinear"] | None = None,
        head_hidden: int | None = None,
        target: Literal["paper", "standardized"] | None = None,
    ):
        super().__init__()
        options = {
            "components": tuple(components) if components is not None else None,
            "rotation_deg": rotation_deg,
            "translate_frac": translate_frac,
            "scale_range": scale_range,
            "shear_deg": shear_deg,
            "aggregation": aggregation,
            "fill": fill,
            "interpolation": interpolation,
            "head_hidden": head_hidden,
            "target": target,
        }
        given = {k: v for k, v in options.items() if v is not None}
        if spec is not None and given:
            raise UserError(f"AffineEstimation got spec= and {', '.join(given)}; pass one or the other")
        if spec is None:
            try:
                spec = AffineSpec(**given)
            except ValidationError as err:
                raise SpecError(describe(err).replace("invalid spec", "invalid AffineEstimation option")) from None
        if not isinstance(feat_dim, int) or feat_dim < 1:
            raise UserError(f"AffineEstimation feat_dim must be a positive int (the encoder's width), got {feat_dim!r}")
        self.spec = spec
        self.feat_dim = feat_dim
        for i, layer in enumerate(affine.build_head(spec, feat_dim)):  # children 0..3: the head's keys
            self.add_module(str(i), layer)

    @property
    def mlp(self) -> nn.Sequential:
        """The head alone, (B, D) aggregated features → (B, k); shares the block's layers (not a copy)."""
        return nn.Sequential(*self.children())

    def predict(self, z: Tensor) -> Tensor:
        """The head on aggregated features z (B, D) → (B, k)."""
        for layer in self.children():
            z = layer(z)
        return z

    def forward(
        self,
        encoder: Callable[[Tensor], Tensor],
        view: Tensor,
        h: Tensor,
        generator: torch.Generator | None = None,
        *,
        return_parts: bool = False,
    ) -> Tensor | AffineParts:
        """Loss of one batch: view (B, C, H, W) float, h = encoder(view) (B, feat_dim) → scalar fp32.

        `generator` draws φ and must live on the view's device; None uses that device's global
        generator. With `return_parts`, returns `AffineParts` (loss, φ, warped view, prediction, target).
        """
        spec = self.spec
        size_px = view.shape[-1]
        gen = generator if generator is not None else default_generator(view.device)
        phi = affine.sample(view.shape[0], spec, size_px, gen)  # (B, 6)
        warped = affine.warp(view, phi, spec)  # (B, C, H, W)
        h_warped = encoder(warped)  # (B, feat_dim)
        pred = self.predict(affine.aggregate(h, h_warped, spec.aggregation)).float()  # (B, k)
        target = affine.targets(phi, spec, size_px)  # (B, k)
        loss = affine.affine_loss(pred, target)
        return AffineParts(loss, phi, warped, pred, target) if return_parts else loss

    def decode(self, pred: Tensor, size_px: int) -> Tensor:
        """Predictions (B, k) → φ (B, 6) in degrees, pixels and scale, for images of size_px."""
        return affine.decode(pred.float(), self.spec, size_px)

    def extra_repr(self) -> str:
        return f"feat_dim={self.feat_dim}, components={','.join(self.spec.components)}, {self.spec.aggregation}"
