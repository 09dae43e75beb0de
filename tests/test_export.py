"""affssl.export and affssl.load_backbone: exported backbones load strictly into torchvision and agree."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file

import affssl
from affssl.checkpoint import BACKBONE_FORMAT, read_header
from affssl.data import Dataset, Split
from affssl.errors import UserError
from affssl.eval import evaluate_knn
from affssl.eval.features import backbone_tensors, build_from, open_source
from affssl.export import export
from affssl.spec import BackboneSpec

ARCHS = {  # torchvision width; both stems
    "resnet18": ("backbone.name=resnet18", "backbone.width=64", "data.image_size_px=32"),  # CIFAR stem
    "resnet50": (
        "backbone.name=resnet50",
        "backbone.width=64",
        "data.image_size_px=64",
        "backbone.cifar_stem=false",
    ),  # ImageNet stem, as the paper
    "mobilenet_v3_small": ("backbone.name=mobilenet_v3_small", "data.image_size_px=16"),
    "vit_b_16": ("backbone.name=vit_b_16", "data.image_size_px=32"),  # 2×2 patches of 16 px
}
# What torchvision's source calls each model's classification Linear, and the feature size before it.
HEADS = {"resnet18": ("fc", 512), "resnet50": ("fc", 2048), "mobilenet_v3_small": ("classifier.3", 1024),
         "vit_b_16": ("heads.head", 768)}  # fmt: skip


def torchvision_without_head(name: str, size: int, cifar_stem: bool) -> torch.nn.Module:
    """get_model(name) with its classification Linear replaced by nn.Identity(), written out by hand."""
    model = torchvision.models.get_model(name, weights=None, **({"image_size": size} if name == "vit_b_16" else {}))
    parent, _, leaf = HEADS[name][0].rpartition(".")
    setattr(model.get_submodule(parent), leaf, torch.nn.Identity())
    if cifar_stem:
        model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = torch.nn.Identity()
    return model.eval()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_export_loads_strictly_into_torchvision(arch, make_checkpoint, tmp_path):
    ckpt = make_checkpoint(ARCHS[arch], arch)
    out = export(ckpt, tmp_path / "bb.safetensors")["path"]
    header = read_header(out)
    spec = BackboneSpec.model_validate_json(header["backbone"])
    assert header["format"] == BACKBONE_FORMAT and spec.name == arch
    assert header["source_sha256"] == open_source(ckpt).sha256
    head, feat_dim = HEADS[arch]
    assert header["removed_head"].startswith(f"{head} ") and json.loads(header["feat_dim"]) == feat_dim
    size = int(header["image_size_px"])
    model = torchvision_without_head(arch, size, spec.cifar_stem)
    weights = load_file(out)
    assert set(weights) == set(model.state_dict())  # exactly torchvision's keys, classifier removed
    model.load_state_dict(weights, strict=True)
    recipe = {"torchvision": torchvision, "nn": torch.nn}
    exec(header["torchvision_model"], recipe)  # the header's one-line recipe builds the same model
    recipe["m"].load_state_dict(weights, strict=True)
    source = open_source(ckpt)
    trained = build_from(source, backbone_tensors(source))  # the encoder as affssl trained it
    loaded = affssl.load_backbone(out)
    assert isinstance(loaded, type(model)) and not loaded.training  # torchvision's own model…
    assert type(loaded) is type(model) or type(loaded).__name__ == "AnySizeViT"  # …or, for a ViT, its any-size class
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model(x)
        assert want.shape == (3, feat_dim)
        for got in (trained(x), loaded(x), affssl.load_backbone(ckpt)(x), recipe["m"].eval()(x)):
            assert (want - got).abs().max() <= 1e-6


@pytest.mark.parametrize("name", ["vit_tiny", "vit_small"])
def test_small_vit_export_loads_strictly_into_vision_transformer_from_its_header(name, make_checkpoint, tmp_path):
    ckpt = make_checkpoint((f"backbone.name={name}", "data.image_size_px=32", "method.proj_hidden=16",
                            "method.proj_out=8", "affine.head_hidden=16"), name)  # fmt: skip
    out = export(ckpt, tmp_path / "bb.safetensors")["path"]
    header = read_header(out)
    kwargs = json.loads(header["torchvision_kwargs"])
    width = {"vit_tiny": 192, "vit_small": 384}[name]
    assert kwargs["image_size"] == 32 and kwargs["patch_size"] == 4 and kwargs["hidden_dim"] == width
    model = torchvision.models.VisionTransformer(**kwargs)
    model.heads.head = torch.nn.Identity()
    weights = load_file(out)
    model.load_state_dict(weights, strict=True)
    recipe = {"torchvision": torchvision, "nn": torch.nn}
    exec(header["torchvision_model"], recipe)
    recipe["m"].load_state_dict(weights, strict=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model.eval()(x)
        assert want.shape == (2, width)
        # 12 float32 transformer layers: other kernel paths (load_backbone's memory format) differ by ~2e-6
        for got in (affssl.load_backbone(out)(x), affssl.load_backbone(ckpt)(x), recipe["m"].eval()(x)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_load_backbone_is_in_eval_mode(tiny_checkpoint):
    model = affssl.load_backbone(tiny_checkpoint)
    assert not model.training and not any(m.training for m in model.modules())


def test_export_refuses_an_export_and_the_source(tiny_checkpoint, tmp_path):
    out = tmp_path / "bb.safetensors"
    export(tiny_checkpoint, out)
    with pytest.raises(UserError, match="already a backbone export"):
        export(out, tmp_path / "again.safetensors")
    with pytest.raises(UserError, match="checkpoint itself"):
        export(tiny_checkpoint, tiny_checkpoint)
    with pytest.raises(UserError, match="--format"):
        export(tiny_checkpoint, tmp_path / "x.pt", fmt="torchscript")


def test_eval_of_an_export_writes_next_to_it(tiny_checkpoint, tmp_path):
    out = tmp_path / "bb.safetensors"
    export(tiny_checkpoint, out)
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["spec"])["data"]["dataset"] == "digits"  # the default data set travels along
    images = torch.randint(0, 256, (30, 3, 16, 16), dtype=torch.uint8)
    data = Dataset(
        "synthetic", Split(images[:20], torch.arange(20) % 2), Split(images[20:], torch.arange(10) % 2), ("a", "b")
    )
    record = evaluate_knn(out, data=data, device="cpu")
    assert record["checkpoint"]["format"] == BACKBONE_FORMAT
    assert (tmp_path / "bb.eval" / "knn-digits.json").is_file()


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
@pytest.mark.parametrize("arch", ["resnet18", pytest.param("mobilenet_v3_small", marks=pytest.mark.slow)])
def test_onnx_matches_torch(arch, tiny_checkpoint, make_checkpoint, tmp_path):
    import onnxruntime

    ckpt = tiny_checkpoint if arch == "resnet18" else make_checkpoint(ARCHS[arch], arch)
    out = export(ckpt, tmp_path / "bb.onnx", fmt="onnx")
    assert out["max_abs_diff"] <= 1e-4
    session = onnxruntime.InferenceSession(out["path"], providers=["CPUExecutionProvider"])
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))  # another batch size: dynamic axis
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.inference_mode():
        want = affssl.load_backbone(ckpt)(x).numpy()
    assert abs(got - want).max() <= 1e-4


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="onnxscript is not installed")
def test_onnx_export_prints_nothing_of_torch_onnx(tiny_checkpoint, tmp_path, capfd):
    export(tiny_checkpoint, tmp_path / "bb.onnx", fmt="onnx")
    printed = capfd.readouterr()
    assert "torch.onnx" not in printed.out + printed.err, printed  # the CLI's own line is all a person sees


def test_onnx_without_the_extra_is_a_user_error(tiny_checkpoint, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "onnx" in name else real(name, *a))
    with pytest.raises(UserError, match="pip install onnx onnxruntime"):
        export(tiny_checkpoint, tmp_path / "bb.onnx", fmt="onnx")
    assert not list(tmp_path.iterdir())


def test_the_printed_load_line_loads_the_file(make_checkpoint, tiny_checkpoint, tmp_path, monkeypatch):
    """`affssl export` says in its one line how the file loads: torchvision (strict) when it can hold it."""
    from typer.testing import CliRunner

    from affssl.cli import app

    monkeypatch.chdir(tmp_path)
    for ckpt, name in (
        (make_checkpoint(ARCHS["resnet18"], "resnet18"), "tv.safetensors"),
        (tiny_checkpoint, "w8.safetensors"),
    ):
        result = CliRunner().invoke(app, ["export", str(ckpt), "--out", name])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert len(lines) == 1 and "; load: " in lines[0]
        namespace = {
            "torchvision": torchvision,
            "nn": torch.nn,
            "affssl": affssl,
            "safetensors": __import__("safetensors.torch"),
        }
        exec(lines[0].split("; load: ", 1)[1], namespace)  # the printed Python runs as written
        if name == "tv.safetensors":  # width 64: torchvision's own model, loaded strict
            assert "torchvision.models.get_model('resnet18'" in lines[0] and "strict=True" in lines[0]
            assert isinstance(namespace["m"], torchvision.models.ResNet)
        else:  # width 8 (the default 16 alike): no torchvision model can hold it
            assert "affssl.load_backbone('w8.safetensors')" in lines[0] and "width 8" in lines[0]
