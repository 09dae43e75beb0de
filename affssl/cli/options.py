"""Options shared by several commands: shortcuts for spec fields (--set reaches every field), and their spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from affssl.errors import UserError
from affssl.spec import COMPONENTS, METHOD_SPECS, RunSpec, build_spec, read_toml
from affssl.spec.methods import unknown_base

SpecArg = Annotated[
    str | None, typer.Argument(help="TOML spec file or preset (default, paper, cifar10-cpu).", show_default=False)
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Override any field: --set optim.lr=0.001")
]
BaseOpt = Annotated[str | None, typer.Option("--base", help=f"Base SSL method: {' | '.join(METHOD_SPECS)}.")]
AffineOpt = Annotated[bool | None, typer.Option("--affine/--no-affine", help="Add the affine module (default on).")]
ComponentsOpt = Annotated[str | None, typer.Option(help=f"Comma list of affine components ({', '.join(COMPONENTS)}).")]
DatasetOpt = Annotated[str | None, typer.Option(help="digits | cifar10 | cifar100 | stl10 | svhn | mnist | "
                                                     "fashion-mnist | caltech101 | PATH to an image folder (Tiny "
                                                     "ImageNet's layout too).")]  # fmt: skip
BackboneOpt = Annotated[
    str | None, typer.Option(help="torchvision classification model (resnet18, vit_b_16, …) or vit_tiny, vit_small.")
]
EpochsOpt = Annotated[int | None, typer.Option(help="Training epochs.")]
BatchOpt = Annotated[int | None, typer.Option(help="Global batch size.")]
LimitOpt = Annotated[int | None, typer.Option(help="Train on N images (stratified when labelled).")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed for weights, data order, views and affine parameters.")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda.")]
# Commands that read a checkpoint (eval, export) rebuild the backbone from the file's header (no --arch).
CkptArg = Annotated[
    Path, typer.Argument(help="RUN/last.safetensors (or RUN), or an `affssl export` file.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a table.")]


def flag_overrides(base=None, affine=None, components=None, dataset=None, backbone=None, epochs=None,
                   batch_size=None, limit=None, seed=None, device=None) -> list[str]:  # fmt: skip
    """The shortcut flags as dotted overrides, applied before --set."""
    pairs = {
        "affine.enabled": affine,
        "affine.components": [c.strip() for c in components.split(",") if c.strip()] if components else None,
        "data.dataset": dataset,
        "backbone.name": backbone,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "data.limit": limit,
        "train.seed": seed,
        "train.device": device,
    }
    return [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None]


def resolve_spec(source: str | None, base: str | None, overrides: list[str]) -> RunSpec:
    tree = read_toml(source) if source else read_toml("default")
    if base is not None:
        if base not in METHOD_SPECS:
            raise UserError(unknown_base(base))
        if tree.get("method", {}).get("name", "simclr") != base:
            tree["method"] = {"name": base}  # the file's method options belong to another method
    return build_spec(tree, overrides, source)


def checkpoint_file(path: Path) -> Path:
    """A CKPT argument as a file: a run folder stands for its RUN/last.safetensors."""
    if not path.is_dir():
        return path
    last = path / "last.safetensors"
    if not last.is_file():
        raise UserError(f"{path} is a folder without last.safetensors; pass a run folder whose training wrote one, "
                        "RUN/epoch-NNNN.safetensors, or an `affssl export` file")  # fmt: skip
    return last
