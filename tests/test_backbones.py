"""Backbones by name: torchvision classification models with the final classification Linear removed.

Oracles: torchvision itself (the layer each family's docs name as its classifier, get_model's
state dict, its features after a strict load) and exact feature equality.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from affssl import runs
from affssl.backbones import ARCHS, ResNet, build_backbone, torchvision_model
from affssl.cli import app
from affssl.engine import pretrain
from affssl.errors import UserError
from affssl.spec import LIST_BACKBONES, WIDTH_RESNETS, BackboneSpec, SpecError, load_spec

# name → (image side px, F, torchvision's classification Linear, as torchvision's source names it)
MODELS = {
    "resnet34": (16, 512, "fc"),  # affssl's ResNet, CIFAR stem
    "resnext50_32x4d": (16, 2048, "fc"),  # torchvision's ResNet class, CIFAR stem
    "mobilenet_v3_small": (16, 1024, "classifier.3"),
    "convnext_tiny": (32, 768, "classifier.2"),
    "vit_b_16": (32, 768, "heads.head"),  # built for 32 px: 2×2 patches
}


def spec_of(name: str) -> BackboneSpec:
    return BackboneSpec(name=name, cifar_stem=name.startswith(("resnet", "resnext")))


def test_width_resnets_are_the_own_resnets():
    assert tuple(ARCHS) == WIDTH_RESNETS


@pytest.mark.parametrize("name", list(MODELS))
def test_features_match_torchvision_without_its_classifier(name):
    size, feat_dim, head = MODELS[name]
    torch.manual_seed(0)
    backbone = build_backbone(spec_of(name), size)
    assert isinstance(backbone, ResNet) == (name in ARCHS)
    assert backbone.feat_dim == feat_dim and backbone.removed_head == head
    full = torchvision.models.get_model(name, weights=None, **({"image_size": size} if "vit" in name else {}))
    layer = full.get_submodule(head)  # the classifier found generically is the one torchvision names
    assert isinstance(layer, nn.Linear) and (layer.in_features, layer.out_features) == (feat_dim, 1000)
    model = torchvision_model(spec_of(name), size).eval()
    assert isinstance(model.get_submodule(head), nn.Identity)
    assert set(model.state_dict()) == set(full.state_dict()) - {f"{head}.weight", f"{head}.bias"}
    model.load_state_dict(backbone.state_dict(), strict=True)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))  # (2, 3, S, S)
    with torch.inference_mode():
        h = backbone.eval()(x)
        assert h.shape == (2, feat_dim)
        assert torch.equal(h, model(x))


def test_vit_is_built_for_the_image_size_and_refuses_one_the_patch_does_not_divide():
    assert build_backbone(BackboneSpec(name="vit_b_16", cifar_stem=False), 48).image_size == 48
    with pytest.raises(UserError, match=r"vit_b_16 cannot be built at 40 px \(.*\); change the image size$"):
        build_backbone(BackboneSpec(name="vit_b_16", cifar_stem=False), 40)


def test_a_model_without_a_linear_classifier_is_a_user_error():
    with pytest.raises(UserError, match=r"squeezenet1_1 has no final nn\.Linear classifier"):
        build_backbone(BackboneSpec(name="squeezenet1_1", cifar_stem=False), 32)


def test_width_and_stem_apply_to_resnets_only():
    with pytest.raises(SpecError, match="width 16 applies to resnet18/34/50/101/152 only"):
        load_spec("default", ["backbone.name=convnext_tiny", "backbone.width=16"])
    with pytest.raises(SpecError, match="CIFAR stem applies to the ResNet family only"):
        load_spec("default", ["backbone.name=vit_b_16", "backbone.cifar_stem=true"])
    # The preset's narrow width belongs to its ResNet: naming another model drops it; the stem resolves per family.
    assert load_spec("default", ["backbone.name=vit_b_16"]).backbone == BackboneSpec(name="vit_b_16", cifar_stem=False)
    assert load_spec("default", ["backbone.name=resnet34"]).backbone.width == 16
    assert load_spec("default", ["backbone.name=wide_resnet50_2"]).backbone.cifar_stem is True


def test_old_spec_headers_still_validate():
    for header in (
        '{"name":"resnet18","width":8,"cifar_stem":true}',
        '{"name":"resnet50","width":64,"cifar_stem":false}',
    ):
        assert BackboneSpec.model_validate_json(header).name in ("resnet18", "resnet50")


@pytest.mark.parametrize("flag", ["--backbone", "--set"])
def test_unknown_backbone_is_one_line_that_says_how_to_list_names(flag):
    args = ["--backbone", "resnet19"] if flag == "--backbone" else ["--set", "backbone.name=vit_giant"]
    result = CliRunner().invoke(app, ["pretrain", *args, "--print-spec"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.output
    assert "backbone.name" in lines[0] and LIST_BACKBONES in lines[0]
    if flag == "--backbone":
        assert "did you mean 'resnet18'" in lines[0]


def test_cli_takes_any_torchvision_name():
    result = CliRunner().invoke(app, ["pretrain", "--backbone", "mobilenet_v3_small", "--print-spec"])
    assert result.exit_code == 0, result.output
    assert 'name = "mobilenet_v3_small"' in result.output


def test_pretrain_a_mobilenet_through_the_engine(tmp_path):
    # train.precision auto: bf16 on a native-bf16 CPU, with the stride-2 convolutions that see 1×1 inputs at
    # 16 px in fp32 (affssl.convguard); unguarded, bf16 read their weight gradients from unwritten memory.
    spec = load_spec("default", ["backbone.name=mobilenet_v3_small", "data.image_size_px=16", "data.limit=128",
                                 "train.batch_size=32", "train.epochs=3", "train.log_every=1", "optim.lr=0.003",
                                 "method.proj_hidden=64", "method.proj_out=16"])  # fmt: skip
    torch.manual_seed(spec.train.seed)  # the engine's initial weights
    initial = build_backbone(spec.backbone, 16).state_dict()
    last = pretrain(spec, tmp_path / "run", show_progress=False)
    epochs = [r for r in runs.read_metrics(tmp_path / "run") if r["kind"] == "epoch"]
    assert len(epochs) == 3 and all(math.isfinite(r["loss"]) for r in epochs)
    assert epochs[-1]["loss"] < epochs[0]["loss"], [r["loss"] for r in epochs]
    trained = {
        k.removeprefix("model.backbone."): v for k, v in load_file(last).items() if k.startswith("model.backbone.")
    }
    assert set(trained) == set(initial)
    assert not torch.equal(trained["features.0.0.weight"], initial["features.0.0.weight"])  # it learned


# ---------------------------------------------------------------------------------------------
# The small ViTs: torchvision's VisionTransformer at ViT-Ti / ViT-S size


@pytest.mark.parametrize(("name", "shape"), [("vit_tiny", (12, 3, 192, 768)), ("vit_small", (12, 6, 384, 1536))])
def test_small_vits_are_torchvisions_vision_transformer(name, shape):
    spec = load_spec("default", [f"backbone.name={name}", "data.image_size_px=32"]).backbone
    assert spec.patch_px == 4 and spec.cifar_stem is False and spec.width == 64  # the preset's width dropped
    torch.manual_seed(0)
    backbone = build_backbone(spec, 32)
    assert isinstance(backbone, torchvision.models.VisionTransformer) and backbone.removed_head == "heads.head"
    assert (backbone.patch_size, backbone.image_size, backbone.hidden_dim, backbone.mlp_dim) == (4, 32, *shape[2:])
    assert (len(backbone.encoder.layers), backbone.encoder.layers[0].num_heads) == shape[:2]
    layers, heads, width, mlp = shape
    full = torchvision.models.VisionTransformer(32, 4, layers, heads, width, mlp)  # the published shape, by hand
    assert set(backbone.state_dict()) == set(full.state_dict()) - {"heads.head.weight", "heads.head.bias"}
    full.heads.head = nn.Identity()
    full.load_state_dict(backbone.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (2, 3, 32, 32)
    with torch.inference_mode():
        h = backbone.eval()(x)
        assert h.shape == (2, width) and backbone.feat_dim == width
        assert torch.equal(h, full.eval()(x))


def test_small_vit_patch_rule_and_checks(tmp_path):
    def patch(*overrides: str) -> int:
        return load_spec("default", ["backbone.name=vit_tiny", *overrides]).backbone.patch_px

    assert patch("data.image_size_px=16") == 4 and patch("data.image_size_px=64") == 4  # up to 64 px: 4
    assert patch("data.image_size_px=96") == 16 and patch("data.image_size_px=224") == 16  # above: 16
    assert patch("data.image_size_px=32", "backbone.patch_px=8") == 8
    with pytest.raises(SpecError, match=r"backbone\.patch_px 16 does not divide data\.image_size_px 72"):
        load_spec("default", ["backbone.name=vit_small", "data.image_size_px=72"])
    with pytest.raises(SpecError, match="patch_px applies to vit_tiny and vit_small only"):
        load_spec("default", ["backbone.name=vit_b_16", "backbone.patch_px=4"])
    # A file's ViT patch belongs to its ViT: naming a ResNet on the command line drops it.
    (tmp_path / "vit.toml").write_text('[backbone]\nname = "vit_tiny"\npatch_px = 2\n')
    assert load_spec(tmp_path / "vit.toml").backbone.patch_px == 2
    assert load_spec(tmp_path / "vit.toml", ["backbone.name=resnet18"]).backbone.patch_px is None


def test_pretrain_vit_tiny_with_adamw_without_decay_on_vectors(tmp_path):
    spec = load_spec("default", ["backbone.name=vit_tiny", "data.limit=64", "train.batch_size=32", "train.epochs=1",
                                 "optim.name=adamw", "optim.exclude_bias_norm=true", "optim.weight_decay=0.05",
                                 "method.proj_hidden=32", "method.proj_out=16", "affine.head_hidden=16",
                                 "train.precision=fp32"])  # fmt: skip
    torch.manual_seed(spec.train.seed)
    initial = build_backbone(spec.backbone, 16).state_dict()
    last = pretrain(spec, tmp_path / "run", show_progress=False)
    trained = load_file(last)
    assert not torch.equal(trained["model.backbone.conv_proj.weight"], initial["conv_proj.weight"])
    assert math.isfinite(runs.read_metrics(tmp_path / "run")[-1]["loss"])
