"""Evaluation of a trained encoder from a checkpoint or export: linear probe, kNN, equivariance probe.

Each entry point opens the file (its header says how to rebuild the backbone), loads the data set
at the backbone's input size, takes frozen features of train and test (cached per checkpoint hash
and data), runs one protocol, and writes RUN/eval/<protocol>-<dataset>.json (next to an export:
<stem>.eval/) with the checkpoint's sha256, its spec and the seeds. The record is also returned.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor

from affssl.checkpoint import TRAIN_FORMAT, CheckpointError
from affssl.data import Dataset
from affssl.errors import UserError
from affssl.eval.features import (
    Source,
    backbone_tensors,
    build_from,
    cached_features,
    load_backbone,
    open_source,
    read_tensors,
    resolve_device,
)
from affssl.eval.knn import KS, TEMPERATURE, knn_accuracy
from affssl.eval.splits import EvalData, load_eval_data
from affssl.spec import AffineSpec

EVAL_FORMAT = "affssl.eval/1"
# linear and equivariance import scikit-learn; they are imported when their probe runs, so that
# `affssl.load_backbone` and `affssl export` (which import eval.features) stay light.
__all__ = ["evaluate_affine", "evaluate_knn", "evaluate_linear", "load_backbone"]


def evaluate_linear(
    ckpt: str | Path,
    *,
    dataset: str | None = None,
    trials: int = 5,
    seed: int = 0,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    cache: bool = True,
    max_iter: int | None = None,
    progress: bool = False,
    data: Dataset | None = None,
) -> dict:
    """The paper's linear probe: `trials` trials (seeds seed…seed+trials−1), accuracy in % ± 95 % CI.

    `max_iter` bounds each L-BFGS fit (default linear.MAX_ITER).
    """
    from affssl.eval.linear import MAX_ITER, linear_probe

    max_iter = max_iter or MAX_ITER
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    run = _Run(ckpt, dataset, seed, limit, device, batch_size, cache, progress, data, need_labels=True)
    backbone = build_from(run.source, backbone_tensors(run.source))
    h_train, h_test = run.features(backbone, "train"), run.features(backbone, "test")
    with run.timed("probe"):
        result = linear_probe(h_train, run.data.train.labels, h_test, run.data.test.labels, trials, seed, max_iter)
    return run.finish("linear", result.summary(), seeds=[seed + t for t in range(trials)], max_iter=max_iter)


def evaluate_knn(
    ckpt: str | Path,
    *,
    dataset: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    cache: bool = True,
    progress: bool = False,
    data: Dataset | None = None,
) -> dict:
    """Weighted cosine kNN (k = 20, 200; T = 0.1): top-1 accuracy in % on test."""
    run = _Run(ckpt, dataset, seed, limit, device, batch_size, cache, progress, data, need_labels=True)
    backbone = build_from(run.source, backbone_tensors(run.source))
    h_train, h_test = run.features(backbone, "train"), run.features(backbone, "test")
    with run.timed("probe"):
        acc = knn_accuracy(h_train, run.data.train.labels, h_test, run.data.test.labels)
    result = {"top1_pct": {str(k): acc[k] for k in KS}, "ks": list(KS), "temperature": TEMPERATURE}
    return run.finish("knn", result, seeds=[seed])


def evaluate_affine(
    ckpt: str | Path,
    *,
    dataset: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    cache: bool = True,
    progress: bool = False,
    data: Dataset | None = None,
) -> dict:
    """The equivariance probe: R² per component of a ridge probe, and of the checkpoint's own head."""
    from affssl.eval import equivariance

    run = _Run(ckpt, dataset, seed, limit, device, batch_size, cache, progress, data, need_labels=False)
    source, size = run.source, run.data.image_size_px
    trained = source.spec.affine if source.spec is not None else AffineSpec()
    learner = _learner(source) if source.format == TRAIN_FORMAT and trained.enabled else None
    backbone = learner.backbone if learner is not None else build_from(source, backbone_tensors(source))
    spec = equivariance.probe_spec(trained)
    offset = equivariance.PROBE_SEED_OFFSET
    phi = {s: equivariance.sample_phi(len(run.split(s).images), spec, size, seed + offset[s]) for s in offset}
    h = {s: run.features(backbone, s) for s in offset}
    hw = {s: run.features(backbone, s, phi=phi[s], affine_spec=spec) for s in offset}
    with run.timed("probe"):
        r2, r2_cols = equivariance.probe(
            h["train"], hw["train"], phi["train"], h["test"], hw["test"], phi["test"], spec, size
        )
        r2_head = None
        if learner is not None:
            embed = learner.method.embed if trained.location == "projector" else None
            r2_head = equivariance.head_r2(learner.head.mlp, embed, h["test"], hw["test"], phi["test"], trained, size)
    result = equivariance.AffineResult(r2, r2_cols, r2_head).summary()
    result["probe_affine"] = json.loads(spec.model_dump_json())
    result["head_note"] = (
        None
        if learner is not None
        else ("no head: a backbone export" if source.format != TRAIN_FORMAT else "no head: trained without the module")
    )
    return run.finish("affine", result, seeds=[seed + offset["train"], seed + offset["test"]])


def _learner(source: Source):
    """The whole trained model (backbone, method, affine head), loaded strictly, in eval mode."""
    from affssl.learner import Learner

    learner = Learner(source.spec)
    try:
        learner.load_state_dict(read_tensors(source.path, "model"), strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{source.path}: the stored model does not fit its spec ({str(err)[:200]}); "
            "it was not written by this version of affssl"
        ) from None
    return learner.eval()


class _Run:
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

    def split(self, which: str):
        return self.data.train if which == "train" else self.data.test

    @contextmanager
    def timed(self, name: str):
        t = time.perf_counter()
        yield
        self.timing[name] = self.timing.get(name, 0.0) + time.perf_counter() - t

    def features(self, backbone, which: str, phi: Tensor | None = None, affine_spec: AffineSpec | None = None):
        images = self.split(which).images
        tag = f"{self.data.tag}-{which}-{self.data.image_size_px}px" + ("-warped" if phi is not None else "")
        with self.timed("features"), _progress(self.progress, f"features {tag}", len(images)) as advance:
            h, hit = cached_features(
                self.source,
                backbone,
                images,
                tag,
                batch_size=self.batch_size,
                device=self.device,
                use_cache=self.use_cache,
                phi=phi,
                affine_spec=affine_spec,
                advance=advance,
            )
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
            },
            "seeds": seeds,
            "result": result,
            "options": {"batch_size": self.batch_size, "device": str(self.device), **options},
            "cache": self.cache_state,
            "timing_s": {k: round(v, 3) for k, v in self.timing.items()},
            "spec": json.loads(src.spec.model_dump_json()) if src.spec is not None else None,
            "affssl_version": __version__,
            "torch_version": torch.__version__,
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path
