"""The training loop: data in memory → batched views on the device → step → log → checkpoint.

Randomness is explicit and derived, per epoch, from (seed, purpose, epoch[, rank]): the data
order, the views and the affine parameters each have their own generator. Resuming from the
checkpoint of epoch e therefore replays epochs e+1… exactly, with no generator state to carry.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from affssl import checkpoint, distributed, hostmem, precision, runs
from affssl.data import Dataset, batches, load_dataset
from affssl.errors import UserError
from affssl.learner import Learner
from affssl.optim import build_optimizer, lr_at
from affssl.spec import RunSpec

PURPOSES = {"order": 0, "views": 1, "affine": 2}


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is cuda but no CUDA device is visible; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and distributed.world_size() > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def generator(seed: int, purpose: str, epoch: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """A generator for one purpose and epoch, seeded from a hash so streams never overlap."""
    key = hashlib.sha256(f"{seed}/{purpose}/{epoch}/{rank}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(key[:8], "little") >> 1)


def pretrain(spec: RunSpec, run: Path, resume: bool = False, show_progress: bool = True,
             data: Dataset | None = None) -> Path:  # fmt: skip
    """Train per spec into the run folder; returns the path of the last checkpoint."""
    torch.manual_seed(spec.train.seed)  # initial weights
    device = resolve_device(spec.train.device)
    if device.type == "cpu":
        hostmem.keep_freed_memory()  # no page faults on activations every step (see hostmem)
    data = data or load_dataset(spec.data, seed=spec.train.seed, progress=show_progress and distributed.is_main())
    images = data.train.images.to(device)  # (N, C, S, S) uint8, resident for the whole run
    world, rank = distributed.world_size(), distributed.rank()
    if spec.train.batch_size % world:
        raise UserError(f"train.batch_size {spec.train.batch_size} must divide by the {world} processes")
    steps_per_epoch = images.shape[0] // spec.train.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"{images.shape[0]} training images are fewer than one batch of {spec.train.batch_size}; "
            "lower --batch-size or raise --limit"
        )
    total_steps = steps_per_epoch * spec.train.epochs

    learner = Learner(spec).to(device)
    if world > 1 and spec.train.sync_bn:  # BatchNorm statistics over the global batch, as one process
        learner = distributed.sync_batchnorm(learner)
    counts = learner.param_counts()
    policy = precision.resolve(spec.train.precision, spec.train.memory_format, device)
    learner = learner.to(memory_format=policy.memory_format)  # conv weights; activations follow them
    params = [p for p in learner.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, spec.optim, fused=device.type == "cuda")
    start_epoch = 0
    if resume:
        tensors, header = checkpoint.load(run / runs.LAST, expect=checkpoint.TRAIN_FORMAT)
        learner.load_state_dict(checkpoint.strip_prefix("model", tensors), strict=True)
        checkpoint.restore_optimizer(optimizer, tensors)
        start_epoch = int(header["epoch"])
        if distributed.is_main():
            kept = [r for r in runs.read_metrics(run) if r.get("epoch", 0) <= start_epoch]
            (run / runs.METRICS).write_text("".join(json.dumps(r) + "\n" for r in kept))
    elif distributed.is_main():
        run.mkdir(parents=True, exist_ok=True)
        runs.write_spec(run, spec)
        overhead = counts["head"] / counts["total"]
        runs.append_metrics(run, {"kind": "params", **counts, "head_overhead_frac": overhead})

    model: nn.Module = learner
    if world > 1:
        model = nn.parallel.DistributedDataParallel(learner, device_ids=[device.index] if device.index is not None
                                                    else None)  # fmt: skip
    step_fn = torch.compile(model) if spec.train.compile else model
    local_batch = spec.train.batch_size // world
    last = run / runs.LAST

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                        disable=not (show_progress and distributed.is_main()))  # fmt: skip
    with progress:
        task = progress.add_task("pretrain", total=total_steps, completed=start_epoch * steps_per_epoch, status="")
        for epoch in range(start_epoch, spec.train.epochs):
            learner.train()
            g_order = generator(spec.train.seed, "order", epoch, device)
            g_views = generator(spec.train.seed, "views", epoch, device, rank)
            g_affine = generator(spec.train.seed, "affine", epoch, device, rank)
            sums: dict[str, torch.Tensor] = {}
            t_epoch = t_log = time.perf_counter()
            for i, index in enumerate(batches(images.shape[0], spec.train.batch_size, g_order)):
                step = epoch * steps_per_epoch + i
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, steps_per_epoch, spec.optim)
                x = images[index[rank * local_batch : (rank + 1) * local_batch]]  # (b, C, S, S) uint8
                with policy.autocast():
                    loss, parts = step_fn(x, g_views, g_affine)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                learner.method.after_step(learner.backbone, (step + 1) / total_steps)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0) + v.float()
                if (i + 1) % spec.train.log_every == 0 or i + 1 == steps_per_epoch:
                    now = time.perf_counter()
                    n_steps = (i % spec.train.log_every) + 1
                    means = distributed.mean(torch.stack(list(sums.values())))  # over ranks (syncs)
                    record = {k: v.item() / (i + 1) for k, v in zip(sums, means, strict=True)}  # epoch running means
                    record |= {"epoch": epoch + 1, "step": step + 1, "lr": optimizer.param_groups[0]["lr"],
                               "img_per_s": n_steps * spec.train.batch_size / (now - t_log)}  # fmt: skip
                    t_log = now
                    if distributed.is_main():
                        runs.append_metrics(run, {"kind": "step", **record})
                    progress.update(task, status=f"loss {record['loss']:.4f}  {record['img_per_s']:.0f} img/s")
                progress.advance(task)
            seconds = time.perf_counter() - t_epoch
            means = distributed.mean(torch.stack(list(sums.values())))
            summary = {k: v.item() / steps_per_epoch for k, v in zip(sums, means, strict=True)}
            summary |= {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "epoch_time_s": seconds,
                        "img_per_s": steps_per_epoch * spec.train.batch_size / seconds}  # fmt: skip
            if distributed.is_main():
                runs.append_metrics(run, {"kind": "epoch", **summary})
                save_checkpoint(last, learner, optimizer, spec, summary)
                if (epoch + 1) % spec.train.checkpoint_every == 0 or epoch + 1 == spec.train.epochs:
                    save_checkpoint(runs.epoch_checkpoint(run, epoch + 1), learner, optimizer, spec, summary)
            distributed.barrier()
    return last


def save_checkpoint(path: Path, learner: Learner, optimizer: torch.optim.Optimizer, spec: RunSpec,
                    summary: dict) -> None:  # fmt: skip
    tensors = checkpoint.with_prefix("model", learner.state_dict()) | checkpoint.optimizer_tensors(optimizer)
    meta = checkpoint.metadata_json(format=checkpoint.TRAIN_FORMAT, spec=spec.model_dump_json(),
                                    epoch=summary["epoch"], step=summary["step"], metrics=summary)  # fmt: skip
    checkpoint.save(path, tensors, meta)
