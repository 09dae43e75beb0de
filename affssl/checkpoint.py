"""Checkpoints as safetensors: tensors plus a text header (format, version, resolved spec, progress).

Never pickle. Writes go to a temporary file in the same folder and are renamed into place, so a
crash leaves either the old file or the new one. Reading validates the file and says plainly
what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from affssl import atomic
from affssl.errors import UserError, write_failed

TRAIN_FORMAT = "affssl.train/1"
BACKBONE_FORMAT = "affssl.backbone/1"


class CheckpointError(UserError):
    pass


def save(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write tensors and string metadata atomically (temp file + os.replace in the same folder).

    A failed write (full disk, read-only folder) removes the temp file, leaves the previous file at
    `path` as it was, and raises a one-line UserError naming the path and the free space.
    """
    from affssl import __version__

    path = Path(path)
    header = {"affssl_version": __version__, "torch_version": torch.__version__, **metadata}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(path) as tmp:
            save_file(tensors, tmp, metadata=header)
    except (OSError, SafetensorError) as err:
        raise write_failed(path, err) from None


def read_header(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass RUN/last.safetensors of a finished run")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err}); it may be truncated or of another kind"
        ) from None


def load(path: Path, expect: str | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the header; with `expect`, the header's format must match."""
    header = read_header(path)
    fmt = header.get("format")
    if expect is not None and fmt != expect:
        raise CheckpointError(
            f"{path} has format {fmt!r}, expected {expect!r}; "
            "pass a training checkpoint (RUN/last.safetensors) or an `affssl export` file as the command needs"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} could not be read ({err}); it may be truncated") from None
    return tensors, header


def spec_of(header: dict[str, str], path: Path):
    """The RunSpec stored in a checkpoint header."""
    from pydantic import ValidationError

    from affssl.spec import RunSpec, describe

    try:
        return RunSpec.model_validate_json(header["spec"])
    except (KeyError, ValidationError) as err:  # one line: pydantic's own message spans several
        why = describe(err) if isinstance(err, ValidationError) else "no spec in the header"
        raise CheckpointError(f"{path} carries no valid affssl spec ({why}); was it written by affssl?") from None


def with_prefix(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    head = prefix + "."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """Flatten optimizer moments to 'optim.<param index>.<name>' tensors."""
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            out[f"optim.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in strip_prefix("optim", tensors).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def metadata_json(**values) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
