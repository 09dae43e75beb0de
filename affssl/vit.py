"""Vision transformers at any input size that the patch divides (multi-crop's local views, evaluation at another size).

torchvision's VisionTransformer asserts the image size it was built for. `AnySizeViT` is that class with a forward
that resizes the position embedding to the input's patch grid when the grid differs from the built one: the class
token's embedding kept, the patch embeddings read as a (D, G, G) image and resized bicubically to (D, H/p, W/p)
(Dosovitskiy et al. 2021 §3.2, as DINO's `interpolate_pos_encoding`). The subclass adds no parameter or buffer,
so its state dict is torchvision's key for key, and at the built size its output is torchvision's bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models import VisionTransformer


def resize_pos_embedding(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """pos (1, 1 + G², D) on a square G×G patch grid → (1, 1 + gh·gw, D) on grid = (gh, gw), class token kept."""
    cls, patches = pos[:, :1], pos[:, 1:]  # (1, 1, D), (1, G², D)
    side, dim = round(patches.shape[1] ** 0.5), pos.shape[-1]
    image = patches.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, D, G, G), rows first as conv_proj's tokens
    image = F.interpolate(image, size=grid, mode="bicubic", align_corners=False)  # (1, D, gh, gw)
    return torch.cat([cls, image.flatten(2).transpose(1, 2)], dim=1)  # (1, 1 + gh·gw, D)


class AnySizeViT(VisionTransformer):
    """torchvision's VisionTransformer (same modules, same state dict) on (B, 3, H, W) for any H, W that
    `patch_size` divides; `image_size` is the size its position embedding was built for."""

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"input {h}×{w} px is not a whole number of {p} px patches")
        tokens = self.conv_proj(x).reshape(n, self.hidden_dim, (h // p) * (w // p)).permute(0, 2, 1)  # (B, T, D)
        tokens = torch.cat([self.class_token.expand(n, -1, -1), tokens], dim=1)  # (B, 1 + T, D)
        built = self.image_size // p
        if (h // p, w // p) == (built, built):
            out = self.encoder(tokens)  # torchvision's own path
        else:
            enc = self.encoder
            tokens = tokens + resize_pos_embedding(enc.pos_embedding, (h // p, w // p))
            out = enc.ln(enc.layers(enc.dropout(tokens)))  # (B, 1 + T, D)
        return self.heads(out[:, 0])  # the class token: (B, D)


def any_size(model: VisionTransformer) -> AnySizeViT:
    """A VisionTransformer built by torchvision (get_model's vit_b_16, …) made to take any size, in place: its
    class becomes the subclass, which holds no state of its own, so modules, weights and init stay untouched."""
    model.__class__ = AnySizeViT
    return model
