"""affssl.export and affssl.load_backbone: exported backbones load strictly into torchvision and agree."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import affssl
from affssl.backbones import torchvision_model
from affssl.checkpoint import BACKBONE_FORMAT, read_header
from affssl.data import Dataset, Split
from affssl.errors import UserError
from affssl.eval import evaluate_knn
from affssl.eval.features import open_source
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
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_export_loads_strictly_into_torchvision(arch, make_checkpoint, tmp_path):
    ckpt = make_checkpoint(ARCHS[arch], arch)
    out = export(ckpt, tmp_path / "bb.safetensors")["path"]
    header = read_header(out)
    spec = BackboneSpec.model_validate_json(header["backbone"])
    assert header["format"] == BACKBONE_FORMAT and spec.name == arch
    assert header["source_sha256"] == open_source(ckpt).sha256
    model = torchvision_model(spec).eval()
    weights = load_file(out)
    assert set(weights) == set(model.state_dict())  # exactly torchvision's keys, fc removed
    model.load_state_dict(weights, strict=True)
    size = int(header["image_size_px"])
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model(x)
        from_export = affssl.load_backbone(out)(x)
        from_checkpoint = affssl.load_backbone(ckpt)(x)
    assert want.shape == (3, 512 if arch == "resnet18" else 2048)
    assert (want - from_export).abs().max() <= 1e-5 and (want - from_checkpoint).abs().max() <= 1e-5


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
def test_onnx_matches_torch(tiny_checkpoint, tmp_path):
    import onnxruntime

    out = export(tiny_checkpoint, tmp_path / "bb.onnx", fmt="onnx")
    assert out["max_abs_diff"] <= 1e-4
    session = onnxruntime.InferenceSession(out["path"], providers=["CPUExecutionProvider"])
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))  # another batch size: dynamic axis
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.inference_mode():
        want = affssl.load_backbone(tiny_checkpoint)(x).numpy()
    assert abs(got - want).max() <= 1e-4


def test_onnx_without_the_extra_is_a_user_error(tiny_checkpoint, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "onnx" in name else real(name, *a))
    with pytest.raises(UserError, match="pip install onnx onnxruntime"):
        export(tiny_checkpoint, tmp_path / "bb.onnx", fmt="onnx")
    assert not list(tmp_path.iterdir())
