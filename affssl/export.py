"""Export the backbone alone (design decision 7): safetensors with torchvision's key names, or ONNX.

Safetensors: the tensors are exactly the state dict of `torchvision.models.get_model(name)` with its
final classification Linear replaced by nn.Identity() (and the same stem, for a ResNet with the CIFAR
stem): `backbones.torchvision_model`, so `model.load_state_dict(load_file(path), strict=True)` works;
the header holds format affssl.backbone/1, the backbone spec, the input size, the replaced layer
(`removed_head`), the one-line recipe of that model (`torchvision_model`) and the keyword arguments
of the torchvision constructor it calls (`torchvision_kwargs`, JSON: for vit_tiny/vit_small
`torchvision.models.VisionTransformer(**kwargs)`, else `get_model(name, weights=None, **kwargs)`), the source
checkpoint's sha256 and its full spec. `affssl.load_backbone(path)` reads either kind of file.
ONNX needs the optional extra (`pip install 'affssl[onnx]'`); its output is checked against torch
with onnxruntime before the file is put in place.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from affssl import atomic, checkpoint
from affssl.backbones import recipe, torchvision_kwargs
from affssl.checkpoint import BACKBONE_FORMAT, TRAIN_FORMAT
from affssl.errors import UserError
from affssl.eval.features import Source, backbone_tensors, build_from, load_backbone, open_source

FORMATS = ("safetensors", "onnx")
INPUT = "float32 RGB (B, 3, S, S) in [0, 1], no mean/std normalisation"
ONNX_TOLERANCE = 1e-4  # max abs difference of features, ONNX Runtime vs torch
__all__ = ["FORMATS", "export", "load_backbone"]


def export(ckpt: str | Path, out: str | Path, fmt: str = "safetensors") -> dict:
    """Write the backbone of a training checkpoint (or, for ONNX, of an export) to `out`; returns a summary."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    source, out = open_source(Path(ckpt)), Path(out)
    if source.format != TRAIN_FORMAT and fmt == "safetensors":
        raise UserError(
            f"{source.path} is already a backbone export ({BACKBONE_FORMAT}); pass a training "
            "checkpoint (RUN/last.safetensors), or --format onnx to convert it"
        )
    _refuse_overwrite(out, source)
    tensors = backbone_tensors(source)
    backbone = build_from(source, tensors)  # strict load: the export can only hold a valid backbone
    summary = {
        "path": str(out),
        "format": fmt,
        "source_sha256": source.sha256,
        "feat_dim": backbone.feat_dim,
        "params": sum(p.numel() for p in backbone.parameters()),
        "tensors": len(tensors),
        "load": how_to_load(out, fmt, recipe(source.backbone, source.image_size_px, backbone.removed_head)),
    }
    if fmt == "safetensors":
        checkpoint.save(out, tensors, _metadata(source, backbone))
    else:
        summary["max_abs_diff"] = _export_onnx(backbone, source, out)
    return summary


def how_to_load(out: Path, fmt: str, torchvision_recipe: str) -> str:
    """One line of Python that loads the written file: torchvision's model (strict) when it can hold the weights.

    A ResNet of width ≠ 64 has no torchvision counterpart (its recipe starts with "none:"): affssl.load_backbone
    rebuilds it as affssl's ResNet with the same key names.
    """
    if fmt == "onnx":
        return f"onnxruntime.InferenceSession({str(out)!r})"
    if torchvision_recipe.startswith("none:"):
        return f"affssl.load_backbone({str(out)!r})  # {torchvision_recipe.removeprefix('none: ').split(';')[0]}"
    return f"{torchvision_recipe}; m.load_state_dict(safetensors.torch.load_file({str(out)!r}), strict=True)"


def _metadata(source: Source, backbone: nn.Module) -> dict[str, str]:
    meta = {
        "format": BACKBONE_FORMAT,
        "backbone": source.backbone.model_dump_json(),
        "image_size_px": source.image_size_px,
        "feat_dim": backbone.feat_dim,
        "removed_head": f"{backbone.removed_head} (the final classification nn.Linear, now nn.Identity())",
        "torchvision_model": recipe(source.backbone, source.image_size_px, backbone.removed_head),
        "torchvision_kwargs": torchvision_kwargs(source.backbone, source.image_size_px),
        "input": INPUT,
        "source": source.path.name,
        "source_sha256": source.sha256,
        "epoch": source.header.get("epoch", ""),
        "step": source.header.get("step", ""),
    }
    if source.spec is not None:
        meta["spec"] = source.spec.model_dump_json()  # provenance, and the default data set of `affssl eval`
    return checkpoint.metadata_json(**meta)


def _refuse_overwrite(out: Path, source: Source) -> None:
    """Never replace the source or a training checkpoint; other files at `out` are replaced."""
    if out.exists() and (out.is_dir() or out.resolve() == source.path.resolve()):
        raise UserError(f"--out {out} is {'a folder' if out.is_dir() else 'the checkpoint itself'}; name a new file")
    if out.is_file() and out.suffix == ".safetensors":
        try:
            fmt = checkpoint.read_header(out).get("format")
        except checkpoint.CheckpointError:
            return
        if fmt == TRAIN_FORMAT:
            raise UserError(f"--out {out} is a training checkpoint; name another file")


def _export_onnx(backbone: nn.Module, source: Source, out: Path) -> float:
    """Write ONNX (dynamic batch), check it against torch with onnxruntime; returns the max abs diff."""
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        # No square brackets in the message: the CLI prints it as rich markup.
        raise UserError(
            f"ONNX export needs {' and '.join(missing)} (the optional extra 'onnx'): pip install onnx onnxruntime"
        )
    import onnx
    import onnxruntime

    s = source.image_size_px
    x = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(0))  # (2, 3, S, S)
    with torch.inference_mode():
        want = backbone(x).numpy()  # (2, F)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(out) as tmp_path:
        tmp = str(tmp_path)
        # The dynamo exporter needs onnxscript; without it, the TorchScript exporter (onnx only).
        dynamo = importlib.util.find_spec("onnxscript") is not None
        batch = (
            {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},), "external_data": False}
            if dynamo
            else {"dynamic_axes": {"images": {0: "batch"}, "features": {0: "batch"}}}
        )
        # verbose=False: no "[torch.onnx] …" progress lines beside the CLI's own one line
        torch.onnx.export(backbone, (x,), tmp, input_names=["images"], output_names=["features"], dynamo=dynamo,
                          verbose=False, **batch)  # fmt: skip
        model = onnx.load(tmp)
        onnx.helper.set_model_props(model, _metadata(source, backbone))
        onnx.save(model, tmp)
        session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        diff = float(abs(got - want).max())
        if diff > ONNX_TOLERANCE:
            raise UserError(f"the ONNX model differs from torch by {diff:.2e} (> {ONNX_TOLERANCE}); nothing written")
    return diff
