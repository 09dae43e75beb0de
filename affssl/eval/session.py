"""One evaluation of one checkpoint: the steps every protocol shares.

A `Session` opens the checkpoint or export, loads the data set at the backbone's input size, takes
frozen features (cached per checkpoint hash and data, timed, with an optional progress bar on
stderr) and writes the result record atomically to RUN/eval/<protocol>-<dataset>.json (next to an
export: <stem>.eval/). `load_learner` rebuilds the whole trained model for the equivariance probe.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor

from affssl import atomic, runenv
from affssl.checkpoint import CheckpointError
from affssl.eval.features import (
    Source,
    backbone_tensors,
    build_from,
    cached_features,
    open_source,
    resolve_device,
    source_tensors,
)
from affssl.eval.splits import EvalData, load_eval_data
from affssl.spec import AffineSpec

EVAL_FORMAT = "affssl.eval/1"


def load_learner(source: Source):
    """The whole trained model (backbone, method, affine head), loaded strictly, in eval mode."""
    from affssl.learner import Learner

    learner = Learner(source.spec)
    try:
        learner.load_state_dict(source_tensors(source, "model"), strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{source.path}: the stored model does not fit its spec ({str(err)[:200]}); "
            "it was not written by this version of affssl"
        ) from None
    return learner.eval()


class Session:
    """Shared steps of every protocol: source, data, cached features, timings, the result record."""

    def __init__(self, ckpt, dataset, seed, limit, device, batch_size, cache, progress, data, need_labels):
        self.t0, self.timing, self.cache_state = time.perf_counter(), {}, {}
        self.source = open_source(Path(ckpt))
        self.device = resolve_device(device)
        self.batch_size, self.use_cache, self.progress, self.seed, self.limit = batch_size, cache, progress, seed, limit
        with self.timed("data"):
            self.data: EvalData = load_eval_data(
                self.source, dataset, seed=seed, limit=limit, need_labels=need_labels, data=data, progress=progress
            )

    @property
    def precision(self) -> str:
        """The training run's precision policy (train.precision); an export without a spec: auto."""
        return self.source.spec.train.precision if self.source.spec is not None else "auto"

    def split(self, which: str):
        return self.data.train if which == "train" else self.data.test

    @contextmanager
    def timed(self, name: str):
        t = time.perf_counter()
        yield
        self.timing[name] = self.timing.get(name, 0.0) + time.perf_counter() - t

    def backbone(self):
        """The file's frozen backbone, rebuilt from its header and tensors."""
        return build_from(self.source, backbone_tensors(self.source))

    def frozen_features(self, *splits: str) -> tuple[Tensor, ...]:
        """Features (N, F) of each split from the file's own backbone (the probes' and the map's input)."""
        backbone = self.backbone()
        return tuple(self.features(backbone, which) for which in splits)

    @property
    def train_batch_size(self) -> int:
        """The training run's batch size (train.batch_size): the batches of features taken as trained."""
        return self.source.spec.train.batch_size if self.source.spec is not None else self.batch_size

    def features(self, backbone, which: str, phi: Tensor | None = None, affine_spec: AffineSpec | None = None,
                 batch_stats: bool = False):  # fmt: skip
        """Features (N, F) of a split, warped by φ when given; `batch_stats`: as trained (affssl.batchstats),
        in batches of the training batch size, else eval mode."""
        tag = f"{which}-{self.data.image_size_px}px" + ("-warped" if phi is not None else "")
        return self._cached(backbone, self.split(which).images, tag, phi, affine_spec, batch_stats)

    def images_features(self, backbone, images: Tensor, name: str, batch_stats: bool = False,
                        batch_size: int | None = None) -> Tensor:  # fmt: skip
        """Features (N, F) of images made from a split (augmented views, rotations), cached like a split's.

        `name` tells people what they are ("test-view1-seed3"); the images' bytes decide the cache key.
        `batch_size` overrides the batches of a `batch_stats` pass (E-SSL encodes 4 turns of B views at once).
        """
        return self._cached(backbone, images, f"{name}-{self.data.image_size_px}px", None, None, batch_stats,
                            batch_size)  # fmt: skip

    def _cached(self, backbone, images, name, phi, affine_spec, batch_stats, batch_size=None) -> Tensor:
        tag = f"{self.data.tag}-{name}" + ("-batchstats" if batch_stats else "")
        batch = (batch_size or self.train_batch_size) if batch_stats else self.batch_size
        with self.timed("features"), _progress(self.progress, f"features {tag}", len(images)) as advance:
            h, hit = cached_features(self.source, backbone, images, tag, batch_size=batch, device=self.device,
                                     use_cache=self.use_cache, phi=phi, affine_spec=affine_spec, advance=advance,
                                     precision_name=self.precision, batch_stats=batch_stats)  # fmt: skip
        self.cache_state[tag] = "off" if not self.use_cache else ("hit" if hit else "miss")
        return h

    def finish(self, protocol: str, result: dict, seeds: list[int], **options) -> dict:
        from affssl import __version__

        src, data = self.source, self.data
        own = src.spec.data.dataset if src.spec is not None else None
        self.timing["total"] = time.perf_counter() - self.t0
        record = {
            "format": EVAL_FORMAT,
            "protocol": protocol,
            "checkpoint": {
                "path": str(src.path.resolve()),
                "sha256": src.sha256,
                "format": src.format,
                "epoch": src.header.get("epoch"),
                "step": src.header.get("step"),
            },
            "backbone": {**json.loads(src.backbone.model_dump_json()), "image_size_px": src.image_size_px},
            "dataset": {
                "name": data.dataset,
                "transfer": own is not None and data.dataset != own,
                "n_train": len(data.train.images),
                "n_test": len(data.test.images),
                "classes": len(data.classes),
                "test_carved": data.test_carved,
                "limit": self.limit,
                "skipped": [path for path, _ in data.skipped],  # unreadable images left out (data.max_bad_frac)
            },
            "seeds": seeds,
            "result": result,
            "options": {
                "batch_size": self.batch_size,
                "device": str(self.device),
                "precision": self.precision,
                "threads": torch.get_num_threads(),  # CPU results are bit-identical at a fixed thread count
                **options,
            },
            "cache": self.cache_state,
            "timing_s": {k: round(v, 3) for k, v in self.timing.items()},
            "spec": json.loads(src.spec.model_dump_json()) if src.spec is not None else None,
            "affssl_version": __version__,
            "torch_version": torch.__version__,
            "cpu_isa": runenv.cpu_isa(),  # with options.threads and torch_version: what decides the bits
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_model": runenv.cpu_model(),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        record["path"] = str(_write_json(src.eval_dir / f"{protocol}-{data.tag}.json", record))
        return record


@contextmanager
def _progress(enabled: bool, description: str, total: int):
    """An `advance(n)` callback drawing a transient bar on stderr, or a no-op."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _write_json(path: Path, record: dict) -> Path:
    """Atomic: a temp file in the same folder, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return path
