"""`affssl export`: write the backbone of a checkpoint alone (safetensors or ONNX) and say what was written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from affssl import hostmem
from affssl.cli.console import friendly, out
from affssl.cli.options import CkptArg, JsonOpt, checkpoint_file


@friendly
def export_backbone(
    ckpt: CkptArg,
    out_path: Annotated[Path, typer.Option("--out", help="File to write.", show_default=False)],
    fmt: Annotated[
        str, typer.Option("--format", help="safetensors | onnx (needs pip install 'affssl\\[onnx]').")
    ] = "safetensors",
    json_: JsonOpt = False,
) -> None:
    """Write the encoder alone and print one line that loads the file.

    The keys are those of the torchvision model with its classification layer
    replaced by nn.Identity(), so the file loads strict into torchvision; a ResNet
    of width ≠ 64 (the default is 16) has no torchvision model and loads with
    affssl.load_backbone(path).
    """
    from affssl.export import export

    hostmem.imports_done()
    summary = export(checkpoint_file(ckpt), out_path, fmt)
    if json_:
        typer.echo(json.dumps(summary))
        return
    check = f", ONNX Runtime vs torch max |diff| {summary['max_abs_diff']:.1e}" if "max_abs_diff" in summary else ""
    out.print(
        f"[green]exported[/] {escape(summary['path'])} ({fmt}, {summary['params']:,} parameters, "
        f"{summary['feat_dim']}-d features{check}); load: {escape(summary['load'])}",
        highlight=False,
        soft_wrap=True,
    )
