"""The run spec's sections: data, views, the affine module, optimizer and training loop.

Strict, frozen pydantic models; every default lives here once (the encoder's in affssl.spec.backbone,
the base methods' in affssl.spec.methods). affssl.spec.run assembles them into a RunSpec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from affssl.spec.base import FrozenSpec as _Spec

COMPONENTS: tuple[str, ...] = ("rotation", "translation", "scale", "shear")
# Square size used when data.image_size_px is not given (digits are 8×8, upscaled for the CNN).
NATIVE_SIZE_PX = {"digits": 16, "cifar10": 32, "cifar100": 32, "svhn": 32, "stl10": 96,
                  "mnist": 28, "fashion-mnist": 28}  # fmt: skip
PRESETS: tuple[str, ...] = ("default", "paper", "cifar10-cpu")


Range = tuple[float, float]


class DataSpec(_Spec):
    dataset: str = Field(
        "digits", description="digits | cifar10 | cifar100 | stl10 | svhn | mnist | fashion-mnist | PATH"
    )
    image_size_px: int | None = Field(
        None, ge=8, le=512, description="images are resized to this square size; None → the data set's own"
    )
    limit: int | None = Field(None, ge=1, description="train on this many images (stratified when labelled)")
    root: Path | None = Field(None, description="download/cache folder (default ~/.cache/affssl or $AFFSSL_CACHE)")
    cache: bool = Field(True, description="keep decoded uint8 tensors on disk so the next run skips decoding")
    classes_file: Path | None = Field(
        None, description="text file of class folders to keep, one per line; imagenet100: the CMC paper's list"
    )

    @model_validator(mode="after")
    def _native_size(self) -> DataSpec:
        if self.image_size_px is None:
            object.__setattr__(self, "image_size_px", NATIVE_SIZE_PX.get(self.dataset, 32))
        return self

    # The storage of large sets (docs/large-data.md; affssl.data.storage, chunkwrite, chunkread).
    storage: Literal["auto", "tensor", "chunks"] = Field(
        "auto",
        description="tensor: decoded set held on the device; chunks: JPEG chunk files streamed with litdata; "
        "auto: tensor when the decoded set fits half the RAM (and CUDA memory), stored resolved",
    )
    store_px: int | None = Field(
        None, ge=8, description="chunks: stored short side (aspect kept, never enlarged); None → as found, at most 1024"
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="chunks: quality of the images re-encoded when stored")
    max_bad_frac: float = Field(
        0.001, ge=0, le=1, description="unreadable images are skipped; more than this share stops the command"
    )
    workers: int | None = Field(
        None, ge=0, description="chunks: loader processes per training process; None → the CPUs shared, 1 to 8"
    )
    bad_count: int | None = Field(None, ge=0, description="set by the run: images skipped as unreadable")
    bad_first: tuple[str, ...] = Field(
        (), description="set by the run: the first of those images (eval skips them too, not counting them)"
    )


class AugmentSpec(_Spec):
    """The base methods' views (paper §2.3): crop, flip, colour jitter, grey-scale, blur."""

    crop_scale: Range = (0.08, 1.0)
    crop_ratio: Range = (3 / 4, 4 / 3)
    flip_p: float = Field(0.5, ge=0, le=1)
    jitter_p: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.8, ge=0)
    contrast: float = Field(0.8, ge=0)
    saturation: float = Field(0.8, ge=0)
    hue: float = Field(0.2, ge=0, le=0.5)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    blur_p: Range = Field((1.0, 1.0), description="per view; the paper always blurs")
    blur_sigma: Range = (0.1, 2.0)
    blur_kernel_frac: float = Field(0.1, ge=0, le=1, description="kernel = int(frac·size), as the paper")
    solarize_p: Range = Field((0.0, 0.0), description="per view; BYOL's asymmetric option is (0, 0.2)")

    @field_validator("crop_scale", "crop_ratio", "blur_sigma")
    @classmethod
    def _ordered(cls, v: Range) -> Range:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"needs 0 < low <= high, got {list(v)}")
        return v

    @field_validator("blur_p", "solarize_p")
    @classmethod
    def _probabilities(cls, v: Range) -> Range:
        if not all(0 <= p <= 1 for p in v):
            raise ValueError(f"probabilities must lie in [0, 1], got {list(v)}")
        return v

    # Multi-crop (Caron et al. 2020, SwAV; DINO): local views besides the two global ones (docs/multicrop-dino.md).
    local_crops: int = Field(0, ge=0, description="local views per image (DINO: 8, solo-learn CIFAR: 6); 0: two views")
    local_size_px: int | None = Field(
        None, ge=4, le=512, description="local views' side; None → 9/16 of data.image_size_px (solo-learn: 18 at 32)"
    )
    local_crop_scale: Range = Field(
        (0.05, 0.4), description="local views' crop area range (DINO: 0.05–0.4; the global views keep crop_scale)"
    )
    local_blur_p: float = Field(0.5, ge=0, le=1, description="local views' blur probability (DINO: 0.5)")
    local_solarize_p: float = Field(0.0, ge=0, le=1, description="local views' solarize probability (DINO: 0)")

    @field_validator("local_crop_scale")
    @classmethod
    def _local_ordered(cls, v: Range) -> Range:
        return cls._ordered(v)


class AffineSpec(_Spec):
    """The paper's module (§1): sample φ, warp view 1, predict φ from an aggregation of features."""

    enabled: bool = True
    components: tuple[Literal["rotation", "translation", "scale", "shear"], ...] = COMPONENTS
    rotation_deg: float = Field(90.0, ge=0, le=180, description="θ ~ U(-r, r)")
    translate_frac: float = Field(0.25, ge=0, lt=1, description="t ~ round(U(-f·W, f·W)) px")
    scale_range: Range = (0.7, 1.3)
    shear_deg: float = Field(25.0, ge=0, lt=90, description="shear x, y ~ U(-s, s)")
    interpolation: Literal["nearest", "bilinear"] = "nearest"
    fill: Literal["black", "bounded"] = "black"
    aggregation: Literal["diff", "concat"] = "diff"
    views: Literal[1, 2] = 1
    location: Literal["encoder", "projector"] = "encoder"
    weight: float | None = Field(None, ge=0, description="λ; None → per base (DEFAULT_AFFINE_WEIGHT)")
    head_hidden: int = Field(512, ge=1)
    target: Literal["paper", "standardized"] = "paper"

    @field_validator("components")
    @classmethod
    def _canonical(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"needs at least one of {', '.join(COMPONENTS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"components repeat: {list(v)}")
        return tuple(c for c in COMPONENTS if c in v)

    @field_validator("scale_range")
    @classmethod
    def _scale(cls, v: Range) -> Range:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"needs 0 < low <= high, got {list(v)}")
        return v


class OptimSpec(_Spec):
    name: Literal["adam", "adamw", "sgd", "lars"] = "adam"
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd and lars")
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0)
    eta: float = Field(0.02, gt=0, description="lars: trust coefficient η of the ratio η‖w‖ / (‖g‖ + wd‖w‖)")
    clip_lr: bool = Field(True, description="lars: a tensor's rate is min(trust ratio, lr) instead of lr × ratio")
    exclude_bias_norm: bool | None = Field(
        None,
        description="tensors of < 2 dimensions (biases, norm scales) get no weight decay (and, with lars, no "
        "trust ratio); None → on for lars, off for adam/adamw/sgd",
    )

    @model_validator(mode="after")
    def _exclusion(self) -> OptimSpec:
        if self.exclude_bias_norm is None:
            object.__setattr__(self, "exclude_bias_norm", self.name == "lars")
        return self


class TrainSpec(_Spec):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=2)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int = Field(10, ge=1, description="also keep epoch-NNNN.safetensors every N epochs")
    log_every: int = Field(10, ge=1, description="steps between metric lines (each one syncs the device)")
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="also write RUN/last.safetensors every N steps inside an epoch (resumable exactly)"
    )
    max_loss: float | None = Field(
        1e6,
        gt=0,
        description="stop the run when the loss passes this (a non-finite loss always stops it); the bases' losses "
        "stay below ~1e4 and the affine MSE near 1, so 1e6 only catches a run that has diverged; inf: off",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32"
    )
    memory_format: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="activations' layout; auto: channels_last (measured faster on CPU and CUDA)"
    )
    compile: bool = False
    sync_bn: bool = Field(
        True,
        description="with several processes, BatchNorm statistics over the global "
        "batch (as one process); off: each process normalises its slice",
    )
    threads: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto",
        description="torch's CPU threads; auto: the CPUs of the affinity mask capped by the cgroup CPU quota "
        "(and OMP_NUM_THREADS); RUN/spec.json stores the number used",
    )
    monitor_every: int = Field(
        1, ge=0, description="epochs between the online kNN (and affine R²) scores on a fixed labelled subset; 0: off"
    )
    monitor_images: int = Field(10_000, ge=1, description="training images in the online kNN's bank")
    monitor_queries: int = Field(
        2_000, ge=1, description="test images the online kNN classifies (held out of train without a test split)"
    )
    loggers: tuple[Literal["tensorboard", "mlflow", "wandb"], ...] = Field(
        (), description="also log metrics.jsonl's records to these (each an extra: pip install 'affssl[NAME]')"
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # Specs written before 0.2 carry `amp` and `channels_last`; read them as the fields that replaced them.
        if isinstance(data, dict) and ("amp" in data or "channels_last" in data):
            data = dict(data)
            if "amp" in data:
                data.setdefault("precision", "auto" if data.pop("amp") else "fp32")
            if "channels_last" in data:
                data.setdefault("memory_format", "auto" if data.pop("channels_last") else "contiguous")
        return data
