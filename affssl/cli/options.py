"""Options shared by several commands: shortcuts for spec fields (--set reaches every field), and their spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from affssl.errors import UserError
from affssl.spec import AUX, COMPONENTS, METHOD_SPECS, RunSpec, build_spec, read_toml
from affssl.spec.methods import unknown_base

SpecArg = Annotated[
    str | None, typer.Argument(help="TOML spec file or preset (default, paper, cifar10-cpu).", show_default=False)
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Override any field: --set optim.lr=0.001")
]
BaseOpt = Annotated[str | None, typer.Option("--base", help=f"Base SSL method: {' | '.join(METHOD_SPECS)}.")]
AffineOpt = Annotated[bool | None, typer.Option("--affine/--no-affine", help="Add the affine module (default on).")]
AuxOpt = Annotated[str | None, typer.Option("--aux", metavar="LIST", help=f"Comma list of auxiliary objectives to "
                                          f"train, the others off: {', '.join(AUX)}, or none (--affine/--no-affine "
                                          "then still decides the affine module).")]  # fmt: skip
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
                   batch_size=None, limit=None, seed=None, device=None, aux=None) -> list[str]:  # fmt: skip
    """The shortcut flags as dotted overrides, applied before --set (--aux before --affine/--no-affine)."""
    flags = {
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
    on = aux_names(aux) if aux is not None else None
    pairs = {f"{name}.enabled": name in on for name in AUX} if on is not None else {}
    pairs |= {k: v for k, v in flags.items() if v is not None}  # so --affine/--no-affine come after --aux
    return [f"{k}={json.dumps(v)}" for k, v in pairs.items()]


def aux_names(aux: str) -> list[str]:
    """--aux's comma list → objective names ("none": no objective); a name that is not one is a one-line error."""
    names = [n.strip() for n in aux.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in AUX]
    if unknown or not names:
        what = f"{', '.join(map(repr, unknown))} {'is not an objective' if len(unknown) == 1 else 'are not objectives'}"
        raise UserError(f"--aux {aux!r}: {what if unknown else 'names no objective'}; choose from "
                        f"{', '.join(AUX)} (comma-separated), or none")  # fmt: skip
    return names


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
