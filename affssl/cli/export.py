"""`affssl export`: write the backbone of a checkpoint alone (safetensors or ONNX) and say what was written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from affssl.cli.console import friendly, out
from affssl.cli.options import CkptArg, JsonOpt


@friendly
def export_backbone(
    ckpt: CkptArg,
    out_path: Annotated[Path, typer.Option("--out", help="File to write.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="safetensors | onnx (needs affssl[onnx]).")] = "safetensors",
    json_: JsonOpt = False,
) -> None:
    """Write the backbone alone; safetensors keys are those of torchvision's ResNet (fc removed)."""
    from affssl.export import export

    summary = export(ckpt, out_path, fmt)
    if json_:
        typer.echo(json.dumps(summary))
        return
    check = f", ONNX Runtime vs torch max |diff| {summary['max_abs_diff']:.1e}" if "max_abs_diff" in summary else ""
    out.print(
        f"[green]exported[/] {summary['path']} ({fmt}, {summary['params']:,} parameters, "
        f"{summary['feat_dim']}-d features{check})",
        highlight=False,
    )
