"""The random-initialisation floor: the untrained encoder of a spec, as a checkpoint every probe reads.

A probe accuracy means little without the score of the same encoder before any training (a random
ResNet's features already separate digits or CIFAR-10 classes far above chance). `write_floor`
builds `Learner(spec)` under `torch.manual_seed(spec.train.seed)`, the same initial weights
`affssl pretrain` starts from, and saves it as an ordinary training checkpoint at epoch 0
(format affssl.train/1, no optimizer state), so `affssl eval` and `ablate` read it like any other.

BatchNorm running statistics at initialisation (mean 0, variance 1) are not what a trained network
carries, and the probes extract in eval mode, so they are settled first: the backbone runs forward
in train mode without gradients over up to SETTLE_IMAGES training images (a seeded draw, images as
float in [0, 1] as in training and extraction), with momentum None, so each BatchNorm ends with
the cumulative average of its batch statistics. Only those buffers change; no weight is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from affssl import checkpoint, runs
from affssl.data import Dataset, load_dataset
from affssl.learner import Learner
from affssl.spec import RunSpec

SETTLE_IMAGES = 2000
SETTLE_BATCH = 256
FLOOR_EPOCH = 0


@torch.no_grad()
def settle_batchnorm(backbone: nn.Module, images: torch.Tensor, seed: int, n_max: int = SETTLE_IMAGES,
                     batch_size: int = SETTLE_BATCH) -> int:  # fmt: skip
    """Reset every BatchNorm's running statistics to the cumulative average over ≤ n_max images (N, C, S, S) uint8.

    Returns the number of images used (a last batch of one is skipped: it has no variance).
    Momentum and the train/eval mode are restored afterwards.
    """
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(images), generator=gen)[:n_max]  # (n,)
    saved = [(m, m.momentum) for m in norms]
    was_training, used = backbone.training, 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        backbone.train()
        for chunk in pick.split(batch_size):
            if len(chunk) < 2:
                continue
            backbone(images[chunk].float().div_(255))  # (b, C, S, S) → (b, F), for the statistics only
            used += len(chunk)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        backbone.train(was_training)
    return used


def write_floor(spec: RunSpec, folder: Path, data: Dataset | None = None, n_max: int = SETTLE_IMAGES) -> Path:
    """FOLDER/spec.json and FOLDER/last.safetensors: the settled untrained model of `spec` at epoch 0.

    Deterministic: the same spec gives the same file content, so a present file of the same spec is kept.
    """
    folder = Path(folder)
    last = folder / runs.LAST
    if last.is_file() and (folder / runs.SPEC).is_file():
        try:
            header = checkpoint.read_header(last)
            if header.get("floor") == "true" and checkpoint.spec_of(header, last) == spec:
                return last
        except checkpoint.CheckpointError:
            pass  # unreadable: written again below
    data = data or load_dataset(spec.data, seed=spec.train.seed)
    torch.manual_seed(spec.train.seed)  # initial weights, as engine.pretrain
    learner = Learner(spec)
    used = settle_batchnorm(learner.backbone, data.train.images, spec.train.seed, n_max)
    learner.eval()
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_spec(folder, spec)
    summary = {"epoch": FLOOR_EPOCH, "step": 0, "settle_images": used}
    meta = checkpoint.metadata_json(format=checkpoint.TRAIN_FORMAT, spec=spec.model_dump_json(), epoch=FLOOR_EPOCH,
                                    step=0, metrics=summary, floor="true")  # fmt: skip
    checkpoint.save(last, checkpoint.with_prefix("model", learner.state_dict()), meta)
    return last


def default_folder(source: str, spec: RunSpec) -> Path:
    """Where `affssl eval … --init random` keeps the floor: RUN/floor for RUN/spec.json, else floors/<hash>."""
    import hashlib

    if Path(source).name == runs.SPEC and Path(source).is_file():
        return Path(source).parent / "floor"
    digest = hashlib.sha256(json.dumps(json.loads(spec.model_dump_json()), sort_keys=True).encode()).hexdigest()
    return Path("floors") / f"{spec.method.name}-seed{spec.train.seed}-{digest[:10]}"
