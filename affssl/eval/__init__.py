"""Evaluation of a trained encoder from a checkpoint or export: linear probe, kNN, equivariance probe and profile.

Each entry point opens the file (its header says how to rebuild the backbone), loads the data set
at the backbone's input size, takes frozen features of train and test (cached per checkpoint hash
and data), runs one protocol, and writes RUN/eval/<protocol>-<dataset>.json (next to an export:
<stem>.eval/) with the checkpoint's sha256, its spec and the seeds. The record is also returned.
Those shared steps are a `Session` (affssl.eval.session); this module holds the protocols.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from affssl import batchstats
from affssl.checkpoint import TRAIN_FORMAT
from affssl.data import Dataset
from affssl.errors import UserError
from affssl.eval.features import load_backbone
from affssl.eval.knn import KS, TEMPERATURE, knn_accuracy
from affssl.eval.session import EVAL_FORMAT, Session, load_learner
from affssl.spec import AffineSpec, AugmentSpec

# `equivariance` (the profile) is the affine probe (`affine`, the same numbers) plus AugSelf's Δ and rotation.
# linear and equivariance import scikit-learn; they are imported when their probe runs, so that
# `affssl.load_backbone` and `affssl export` (which import eval.features) stay light.
__all__ = [
    "EVAL_FORMAT",
    "evaluate_affine",
    "evaluate_equivariance",
    "evaluate_knn",
    "evaluate_linear",
    "load_backbone",
]


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
    run = Session(ckpt, dataset, seed, limit, device, batch_size, cache, progress, data, need_labels=True)
    h_train, h_test = run.frozen_features("train", "test")
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
    run = Session(ckpt, dataset, seed, limit, device, batch_size, cache, progress, data, need_labels=True)
    h_train, h_test = run.frozen_features("train", "test")
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
    """The affine equivariance probe: R² per component of a ridge probe, and of the checkpoint's own head."""
    run = Session(ckpt, dataset, seed, limit, device, batch_size, cache, progress, data, need_labels=False)
    learner = _learner(run.source)
    backbone = learner.backbone if learner is not None else run.backbone()
    result, seeds = _affine_profile(run, backbone, learner, seed)
    return run.finish("affine", result, seeds=seeds)


def evaluate_equivariance(
    ckpt: str | Path,
    *,
    dataset: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    cache: bool = True,
    max_iter: int | None = None,
    progress: bool = False,
    data: Dataset | None = None,
) -> dict:
    """The equivariance profile of any checkpoint: affine R² per component (the affine probe's numbers),
    AugSelf's crop and colour Δ R², 4-way rotation accuracy, and each trained head's own score (affssl.eval.profile).

    `max_iter` bounds each L-BFGS fit of the rotation probe (default linear.MAX_ITER).
    """
    from affssl.eval import profile

    run = Session(ckpt, dataset, seed, limit, device, batch_size, cache, progress, data, need_labels=False)
    learner = _learner(run.source)
    backbone = learner.backbone if learner is not None else run.backbone()
    blocks = dict(learner.objectives) if learner is not None else {}
    affine_result, affine_seeds = _affine_profile(run, backbone, learner, seed)
    spec = run.source.spec.augment if run.source.spec is not None else AugmentSpec()
    offset = profile.VIEW_SEED_OFFSET
    pairs = {s: profile.pair_views(run.split(s).images, spec, seed + offset[s]) for s in offset}
    h1 = {s: run.images_features(backbone, pairs[s].v1, f"{s}-view1-seed{seed + offset[s]}") for s in offset}
    h2 = {s: run.images_features(backbone, pairs[s].v2, f"{s}-view2-seed{seed + offset[s]}") for s in offset}
    turned = {s: profile.rotated(run.split(s).images) for s in offset}  # (4N, 3, S, S), (4N,)
    h_rot = {s: run.images_features(backbone, turned[s][0], f"{s}-rot90x4") for s in offset}
    with run.timed("probe"):
        r2, r2_cols = profile.augself_r2(h1["train"], h2["train"], pairs["train"].targets, h1["test"], h2["test"],
                                         pairs["test"].targets)  # fmt: skip
        head = blocks.get("augself")
        augself_head = profile.augself_head_r2(head, h1["test"], h2["test"], pairs["test"].targets) if head else None
        acc, c = profile.rotation_probe(h_rot["train"], turned["train"][1], h_rot["test"], turned["test"][1], seed,
                                        max_iter)  # fmt: skip
        head = blocks.get("rotation")
        head_acc = profile.rotation_head_acc(head, h_rot["test"], turned["test"][1]) if head else None
    augself_batch = rotation_batch = None  # the heads as trained (affssl.batchstats)
    if blocks.get("augself") is not None:
        name = f"test-view{{}}-seed{seed + offset['test']}"
        hb1, hb2 = (run.images_features(backbone, v, name.format(i), batch_stats=True)
                    for i, v in ((1, pairs["test"].v1), (2, pairs["test"].v2)))  # fmt: skip
        augself_batch = profile.augself_head_r2(blocks["augself"], hb1, hb2, pairs["test"].targets)
    if blocks.get("rotation") is not None:
        trained = run.source.spec
        small, labels = profile.small_view_turns(
            run.split("test").images, trained, seed + profile.SMALL_VIEW_SEED_OFFSET
        )
        h_small = run.images_features(
            backbone,
            small,
            f"test-smallviews-rot90x4-seed{seed + profile.SMALL_VIEW_SEED_OFFSET}",
            batch_stats=True,
            batch_size=profile.ROTATIONS * trained.train.batch_size,
        )
        rotation_batch = profile.rotation_head_acc(blocks["rotation"], h_small, labels)
    result = {
        "affine": affine_result,
        "augself": {
            "r2": r2,
            "r2_columns": r2_cols,
            "r2_head": None if augself_head is None else augself_head["r2"],
            "r2_head_columns": None if augself_head is None else augself_head["r2_columns"],
            "r2_head_batch": None if augself_batch is None else augself_batch["r2"],
            "augment": json.loads(spec.model_dump_json()),
        },
        "rotation": profile.RotationResult(acc, c, head_acc, rotation_batch).summary(),
        "heads": [name for name in ("affine", "augself", "rotation") if _has_head(learner, name)],
    }
    seeds = [*affine_seeds, seed + offset["train"], seed + offset["test"], seed]  # φ, the views, the rotation split
    return run.finish("equivariance", result, seeds=seeds, max_iter=max_iter)


def _learner(source):
    """The whole trained model when the file is a training checkpoint with any head to score, else None
    (also for a floor, affssl.floor: its heads were never trained)."""
    spec = source.spec
    if source.format != TRAIN_FORMAT or spec is None or _untrained(source):
        return None
    return load_learner(source) if any(getattr(spec, name).enabled for name in ("affine", "augself", "rotation")) \
        else None  # fmt: skip


def _untrained(source) -> bool:
    from affssl.floor import FLOOR_EPOCH  # the learner's imports: only when a probe runs

    return str(source.header.get("epoch")) == str(FLOOR_EPOCH)


def _has_head(learner, name: str) -> bool:
    if learner is None:
        return False
    return learner.head is not None if name == "affine" else name in learner.objectives


def _affine_profile(run: Session, backbone, learner, seed: int) -> tuple[dict, list[int]]:
    """The affine probe's result (R² per component and column, the trained head's R²) and its φ seeds."""
    from affssl.eval import equivariance

    source, size = run.source, run.data.image_size_px
    trained = source.spec.affine if source.spec is not None else AffineSpec()
    head = learner.head if learner is not None and trained.enabled else None
    spec = equivariance.probe_spec(trained)
    offset = equivariance.PROBE_SEED_OFFSET
    phi = {s: equivariance.sample_phi(len(run.split(s).images), spec, size, seed + offset[s]) for s in offset}
    h = {s: run.features(backbone, s) for s in offset}
    hw = {s: run.features(backbone, s, phi=phi[s], affine_spec=spec) for s in offset}
    with run.timed("probe"):
        r2, r2_cols = equivariance.probe(
            h["train"], hw["train"], phi["train"], h["test"], hw["test"], phi["test"], spec, size
        )
        r2_head = r2_head_batch = None
        if head is not None:
            embed = learner.method.embed if trained.location == "projector" else None
            r2_head = equivariance.head_r2(head.mlp, embed, h["test"], hw["test"], phi["test"], trained, size)
    if head is not None:  # as trained: each pass (clean, warped) on its own batch statistics
        h_b, hw_b = (run.features(backbone, "test", p, spec if p is not None else None, batch_stats=True)
                     for p in (None, phi["test"]))  # fmt: skip
        with run.timed("probe"), batchstats.batch_statistics(learner), torch.no_grad():
            if embed is not None:  # the projector too, batch by batch as in training
                b = run.train_batch_size
                h_b, hw_b = (torch.cat([embed(f[i : i + b]) for i in range(0, len(f), b)]) for f in (h_b, hw_b))
            r2_head_batch = equivariance.head_r2(head.mlp, None, h_b, hw_b, phi["test"], trained, size)
    result = equivariance.AffineResult(r2, r2_cols, r2_head, r2_head_batch).summary()
    result["probe_affine"] = json.loads(spec.model_dump_json())
    result["head_note"] = None if head is not None else _head_note(source)
    return result, [seed + offset["train"], seed + offset["test"]]


def _head_note(source) -> str:
    if source.format != TRAIN_FORMAT:
        return "no head: a backbone export"
    return "no head: an untrained encoder (floor)" if _untrained(source) else "no head: trained without the module"
