"""ViTs at any input size: torchvision's output at the built size, a naive reference at another (patches cut by
hand, the position embedding resized by hand with F.interpolate, torchvision's encoder layers), the local views'
size rule, and DINO on vit_tiny with local crops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file
from torch import nn

from affssl import runs
from affssl.backbones import build_backbone
from affssl.engine import pretrain
from affssl.spec import BackboneSpec, SpecError, load_spec
from affssl.vit import AnySizeViT


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_vit(built_px: int = 32, patch_px: int = 4) -> tuple[AnySizeViT, nn.Module]:
    """affssl's vit_tiny and torchvision's VisionTransformer holding the same weights, both in eval mode."""
    torch.manual_seed(0)
    model = build_backbone(BackboneSpec(name="vit_tiny", patch_px=patch_px), built_px).eval()
    reference = torchvision.models.VisionTransformer(built_px, patch_px, 12, 3, 192, 768)
    reference.heads.head = nn.Identity()
    reference.load_state_dict(model.state_dict(), strict=True)  # torchvision's keys, every one
    return model, reference.eval()


def naive_features(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ViT on x (B, 3, H, W) of any size: patches cut by hand, position embedding interpolated by hand."""
    p, (b, c, h, w) = vit.patch_size, x.shape
    gh, gw = h // p, w // p
    patches = x.unfold(2, p, p).unfold(3, p, p)  # (B, C, gh, gw, p, p)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, gh * gw, c * p * p)  # rows first
    weight = vit.conv_proj.weight.reshape(vit.hidden_dim, c * p * p)  # (D, C·p·p)
    tokens = patches @ weight.T + vit.conv_proj.bias  # (B, T, D)
    tokens = torch.cat([vit.class_token.expand(b, 1, -1), tokens], dim=1)  # (B, 1 + T, D)
    pos = vit.encoder.pos_embedding[0]  # (1 + G², D)
    side = vit.image_size // p
    grid = pos[1:].reshape(side, side, -1).permute(2, 0, 1).unsqueeze(0)  # (1, D, G, G)
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)[0]  # (D, gh, gw)
    pos = torch.cat([pos[:1], grid.reshape(vit.hidden_dim, gh * gw).T])  # (1 + T, D)
    out = vit.encoder.ln(vit.encoder.layers(tokens + pos))
    return out[:, 0]  # (B, D)


def test_at_the_built_size_the_output_is_torchvisions_bit_for_bit():
    model, reference = tiny_vit()
    x = torch.rand(3, 3, 32, 32, generator=_gen(1))
    with torch.inference_mode():
        assert torch.equal(model(x), reference(x))
        assert torch.equal(naive_features(reference, x), naive_features(reference, x))  # the reference is pure
        torch.testing.assert_close(naive_features(reference, x), reference(x), atol=1e-5, rtol=1e-5)  # and right


@pytest.mark.parametrize(("h", "w"), [(16, 16), (20, 20), (48, 48), (16, 24), (4, 8)])
def test_another_size_equals_the_naive_reference(h, w):
    model, reference = tiny_vit()
    x = torch.rand(2, 3, h, w, generator=_gen(2))
    with torch.inference_mode():
        got = model(x)
        assert got.shape == (2, 192)
        torch.testing.assert_close(got, naive_features(reference, x), atol=1e-5, rtol=1e-5)
        with pytest.raises(AssertionError, match="Wrong image height"):  # what torchvision itself does
            reference(x)


def test_the_class_token_embedding_is_kept_and_gradients_reach_the_built_embedding():
    model, _ = tiny_vit()
    model(torch.rand(2, 3, 16, 16, generator=_gen(3))).sum().backward()
    grad = model.encoder.pos_embedding.grad  # (1, 1 + 64, 192): every built position feeds the 4×4 grid
    assert grad.shape == (1, 65, 192) and grad[0, 0].abs().sum() > 0 and (grad[0, 1:].abs().sum(-1) > 0).all()


def test_a_size_the_patch_does_not_divide_is_refused():
    model, _ = tiny_vit()
    with pytest.raises(ValueError, match=r"input 18×18 px is not a whole number of 4 px patches"):
        model(torch.rand(1, 3, 18, 18))


def test_torchvisions_named_vits_take_any_size_too():
    torch.manual_seed(0)
    model = build_backbone(BackboneSpec(name="vit_b_16", cifar_stem=False), 32).eval()
    torch.manual_seed(0)
    plain = torchvision.models.get_model("vit_b_16", weights=None, image_size=32)  # same init: class swap only
    plain.heads.head = nn.Identity()
    assert isinstance(model, AnySizeViT) and model.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values(), strict=True))
    x = torch.rand(2, 3, 32, 32, generator=_gen(4))
    with torch.inference_mode():
        assert torch.equal(model(x), plain.eval()(x))
        small = torch.rand(2, 3, 16, 48, generator=_gen(5))  # 1×3 patches against the built 2×2
        torch.testing.assert_close(model(small), naive_features(plain, small), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# The local views' side: a whole number of patches


def test_vit_local_size_defaults_to_whole_patches_and_a_given_one_must_fit():
    dino = ["method.name=dino", "augment.local_crops=6"]
    assert load_spec("default", [*dino, "data.image_size_px=32"]).augment.local_size_px == 18  # ResNet: 9/16
    vit = [*dino, "backbone.name=vit_tiny", "data.image_size_px=32"]
    assert load_spec("default", vit).augment.local_size_px == 16  # 18 px rounded down to 4 patches of 4 px
    assert load_spec("default", [*vit, "augment.local_size_px=12"]).augment.local_size_px == 12
    with pytest.raises(SpecError, match=r"local_size_px 18 is not a whole number of vit_tiny's 4 px patches; "
                                        r"set augment.local_size_px=16 or 20$"):  # fmt: skip
        load_spec("default", [*vit, "augment.local_size_px=18"])
    big = [*dino, "backbone.name=vit_b_16", "data.image_size_px=224"]
    assert load_spec("default", big).augment.local_size_px == 112  # 126 px → 7 patches of 16 px
    with pytest.raises(SpecError, match=r"vit_b_16's 16 px patches; set augment.local_size_px=16$"):
        load_spec("default", [*big, "augment.local_size_px=8"])


def test_dino_trains_vit_tiny_with_local_crops(tmp_path):
    spec = load_spec("default", ["method.name=dino", "backbone.name=vit_tiny", "data.image_size_px=16",
                                 "augment.local_crops=6", "data.limit=16", "train.batch_size=8", "train.epochs=1",
                                 "train.log_every=1", "method.proj_hidden=32", "method.proj_out=16",
                                 "method.prototypes=64", "method.freeze_last_layer_epochs=0", "affine.head_hidden=16",
                                 "optim.name=adamw", "train.precision=fp32"])  # fmt: skip
    assert spec.augment.local_size_px == 8  # 2×2 patches of 4 px against the global views' 4×4
    torch.manual_seed(spec.train.seed)
    initial = build_backbone(spec.backbone, 16).state_dict()
    trained = load_file(pretrain(spec, tmp_path / "run", show_progress=False))
    steps = [m for m in runs.read_metrics(tmp_path / "run") if "loss" in m]  # one line a step
    assert [m["step"] for m in steps][-1] == 2 and all(math.isfinite(m["loss"]) for m in steps)
    assert not torch.equal(trained["model.backbone.encoder.pos_embedding"], initial["encoder.pos_embedding"])
