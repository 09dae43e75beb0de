"""Frozen features: rebuild a backbone from a file's header alone, extract in eval mode, cache on disk.

A source is a training checkpoint (format affssl.train/1, tensors model.backbone.*) or a backbone
export (affssl.backbone/1, tensors named as the torchvision model without its classifier). The file
is read once, whole: its header, its sha256 (recorded in results, part of the feature-cache key) and
the weights evaluated all come from those bytes, so a run that replaces RUN/last.safetensors while an
eval loads its data cannot make it score one checkpoint and record another. Both carry
the backbone spec and the input size, so no --arch flag exists. Extraction runs under inference_mode with BatchNorm in
eval mode (running statistics, not the paper's train-mode quirk), channels_last, the training precision
policy (bf16 autocast where the hardware has it), images as float
in [0, 1] without mean/std, as in training. Features are cached as safetensors keyed by the
sha256 of the source file and of the exact image bytes (so a subset or another data set never
hits a stale entry), the split and any warp applied before the forward pass.

Dimensions: N images, S image side in px, F feature dimension.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from torch import Tensor, nn

from affssl import affine, batchstats, checkpoint, hostmem, precision
from affssl.backbones import build_backbone, torchvision_model
from affssl.checkpoint import BACKBONE_FORMAT, TRAIN_FORMAT, CheckpointError
from affssl.errors import UserError
from affssl.spec import AffineSpec, BackboneSpec, RunSpec

FEATURES_FORMAT = "affssl.features/1"
BACKBONE_PREFIX = "model.backbone"


@dataclass(frozen=True)
class Source:
    """What a checkpoint or export header says, its sha256 and its model tensors, all from one read of the file."""

    path: Path
    format: str  # TRAIN_FORMAT | BACKBONE_FORMAT
    backbone: BackboneSpec
    image_size_px: int
    spec: RunSpec | None  # the training spec; an export made by affssl carries it too
    header: dict[str, str]
    sha256: str
    tensors: dict[str, Tensor] = field(default_factory=dict, repr=False)  # model.* (training) or all (export)

    @property
    def eval_dir(self) -> Path:
        """RUN/eval for a training checkpoint, <stem>.eval/ next to an export."""
        if self.format == TRAIN_FORMAT:
            return self.path.parent / "eval"
        return self.path.parent / f"{self.path.stem}.eval"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def open_source(path: Path) -> Source:
    """Read a training checkpoint or a backbone export once and check its header."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass RUN/last.safetensors of a finished run")
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path} could not be read ({err.strerror or err})") from None
    header = _header_of(blob, path)
    fmt = header.get("format")
    if fmt == TRAIN_FORMAT:
        spec = checkpoint.spec_of(header, path)
        backbone, size = spec.backbone, spec.data.image_size_px
    elif fmt == BACKBONE_FORMAT:
        spec = checkpoint.spec_of(header, path) if "spec" in header else None
        try:
            backbone = BackboneSpec.model_validate_json(header["backbone"])
            size = int(header["image_size_px"])
        except (KeyError, ValueError) as err:
            raise CheckpointError(
                f"{path} is a backbone export without a valid backbone spec ({err}); "
                "export it again with `affssl export`"
            ) from None
    else:
        raise CheckpointError(
            f"{path} has format {fmt!r}; pass a training checkpoint ({TRAIN_FORMAT}, RUN/last.safetensors) "
            f"or an `affssl export` file ({BACKBONE_FORMAT})"
        )
    keep = "model." if fmt == TRAIN_FORMAT else ""
    tensors = {k: v for k, v in _tensors_of(blob, path).items() if k.startswith(keep)}
    return Source(path, fmt, backbone, size, spec, header, hashlib.sha256(blob).hexdigest(), tensors)


def _header_of(blob: bytes, path: Path) -> dict[str, str]:
    """The metadata of safetensors bytes: an 8-byte little-endian length, then that much JSON."""
    try:
        n = int.from_bytes(blob[:8], "little")
        if len(blob) < 8 or n > len(blob) - 8:
            raise ValueError(f"a header of {n:,} bytes in a file of {len(blob):,}")
        meta = json.loads(blob[8 : 8 + n]).get("__metadata__") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("metadata that is not text")
    except (ValueError, AttributeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err}); it may be truncated or of another kind"
        ) from None
    return meta


def _tensors_of(blob: bytes, path: Path) -> dict[str, Tensor]:
    try:
        return load_bytes(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} could not be read ({err}); it may be truncated") from None


def source_tensors(source: Source, prefix: str | None = None) -> dict[str, Tensor]:
    """The source's tensors under `prefix.` (with it stripped), as read by open_source."""
    head = f"{prefix}." if prefix else ""
    return {k[len(head) :]: v for k, v in source.tensors.items() if k.startswith(head)}


def backbone_tensors(source: Source) -> dict[str, Tensor]:
    """The backbone's state dict, with torchvision's key names, from either kind of source."""
    return source_tensors(source, BACKBONE_PREFIX if source.format == TRAIN_FORMAT else None)


def build_from(source: Source, tensors: dict[str, Tensor], torchvision: bool = False) -> nn.Module:
    """The backbone of a source with its weights loaded strictly, in eval mode.

    `torchvision`: build torchvision's own model (`backbones.torchvision_model`) rather than affssl's
    encoder; they differ only for resnet18/34/50/101/152, whose weights both hold at width 64.
    """
    build = torchvision_model if torchvision else build_backbone
    backbone = build(source.backbone, source.image_size_px)
    try:
        backbone.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise CheckpointError(
            f"{source.path}: the stored weights do not fit its backbone spec ({first}); "
            "the file was not written by this version of affssl"
        ) from None
    return backbone.eval()


def load_backbone(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A ready encoder (eval mode) from a training checkpoint or an `affssl export` file.

    It is torchvision's model (`torchvision.models.get_model(name)`, classification Linear replaced by
    nn.Identity(), CIFAR stem for a ResNet trained with it), except for ResNets of width ≠ 64, which
    torchvision cannot hold: those are affssl's ResNet with the same key names.
    Input: (B, 3, S, S) float RGB in [0, 1] without mean/std normalisation; output (B, F).
    """
    source = open_source(Path(path))
    return build_from(source, backbone_tensors(source), torchvision=source.backbone.width == 64).to(device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r} is not one of auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# Extraction


def extract(
    backbone: nn.Module,
    images: Tensor,
    batch_size: int,
    device: torch.device,
    phi: Tensor | None = None,
    affine_spec: AffineSpec | None = None,
    advance: Callable[[int], None] | None = None,
    precision_name: str = "auto",
    batch_stats: bool = False,
) -> Tensor:
    """Features (N, F) float32 on the CPU of uint8 images (N, 3, S, S), optionally warped by φ (N, 6) first.

    Float images (N, 3, S, S) in [0, 1] (augmented views: affssl.eval.profile) are taken as they are.
    `batch_stats`: every BatchNorm normalises each batch by its own statistics, as in training
    (affssl.batchstats), so the features depend on `batch_size`; otherwise eval mode (running statistics).

    The forward pass runs under the training precision policy (`precision_name` as train.precision:
    auto is bf16 autocast on CUDA and on CPUs with native bf16); the warp and the features stay fp32.
    """
    policy = precision.resolve(precision_name, "channels_last", device)
    backbone.eval().to(device, memory_format=torch.channels_last)
    if device.type == "cpu":
        hostmem.keep_freed_memory()  # reuse activation blocks between batches
    source = images.to(device) if device.type == "cuda" else images  # uint8 is small: one copy
    chunks = []
    with torch.inference_mode(), batchstats.batch_statistics(backbone) if batch_stats else nullcontext():
        for start in range(0, len(images), batch_size):
            x = source[start : start + batch_size].to(device, non_blocking=True)  # (b, 3, S, S) uint8 or float
            x = x.contiguous(memory_format=torch.channels_last)
            x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()  # cast once, in place; views: as given
            if phi is not None:
                x = affine.warp(x, phi[start : start + batch_size].to(device), affine_spec)
                x = x.contiguous(memory_format=torch.channels_last)
            with policy.autocast():
                chunks.append(backbone(x).float())  # (b, F)
            if advance is not None:
                advance(len(x))
    return torch.cat(chunks).cpu() if chunks else torch.empty(0, 0)  # (N, F)


def content_key(source: Source, images: Tensor, variant: str) -> str:
    """sha256 of (source file, image bytes, image size, variant): any change gives a new key."""
    digest = hashlib.sha256(images.contiguous().numpy().data).hexdigest()  # no copy of the images
    blob = json.dumps([FEATURES_FORMAT, source.sha256, digest, list(images.shape), variant])
    return hashlib.sha256(blob.encode()).hexdigest()


def slug(text: str) -> str:
    """A file-name-safe tag: a data set name or the last part of a folder path."""
    name = Path(text).name if ("/" in text or "\\" in text) else text
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "data"


def cached_features(
    source: Source,
    backbone: nn.Module,
    images: Tensor,
    tag: str,
    *,
    batch_size: int,
    device: torch.device,
    use_cache: bool = True,
    phi: Tensor | None = None,
    affine_spec: AffineSpec | None = None,
    advance: Callable[[int], None] | None = None,
    precision_name: str = "auto",
    batch_stats: bool = False,
) -> tuple[Tensor, bool]:
    """(features (N, F), cache hit) for images; stored under source.eval_dir/cache/<tag>-<key>.safetensors.

    `tag` names the data set and split for people (e.g. "digits-train-16px"); the key decides.
    A warp (φ and its spec) is part of the key, so warped features are cached too.
    """
    variant = "plain" if phi is None else "warp:" + affine_spec.model_dump_json() + ":" + _tensor_digest(phi)
    policy = precision.resolve(precision_name, "channels_last", device)
    variant += "" if policy.dtype is None else f":{policy.name}"  # bf16 features are cached apart from fp32 ones
    variant += f":batch-statistics:{batch_size}" if batch_stats else ""  # then the batches decide the features
    key = content_key(source, images, variant)
    path = source.eval_dir / "cache" / f"{slug(tag)}-{key[:16]}.safetensors"
    if use_cache and (hit := _read_cache(path, key, len(images))) is not None:
        if advance is not None:
            advance(len(images))
        return hit, True
    h = extract(backbone, images, batch_size, device, phi, affine_spec, advance, precision_name, batch_stats)  # (N, F)
    if use_cache:
        meta = {
            "format": FEATURES_FORMAT,
            "key": key,
            "source_sha256": source.sha256,
            "tag": tag,
            "variant": variant[:200],
            "n": str(len(images)),
        }
        checkpoint.save(path, {"features": h}, meta)
    return h, False


def _tensor_digest(t: Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().data).hexdigest()


def _read_cache(path: Path, key: str, n: int) -> Tensor | None:
    """Cached features, or None when absent, foreign or corrupt (the caller then recomputes)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            h = f.get_tensor("features")
    except (SafetensorError, OSError, ValueError):
        return None
    return h if h.ndim == 2 and h.shape[0] == n and h.dtype == torch.float32 else None
