"""The training loop: data (on the device, or read from chunks) → batched views on the device → step → log.

Randomness is explicit and derived, per epoch, from (seed, purpose, epoch[, rank]) (affssl.streams):
the data order, the views and each auxiliary objective (affine φ, E-SSL's small views, CARE's
shared draws) have their own generator. Resuming from the checkpoint of epoch e therefore replays
epochs e+1… exactly, with no generator state to carry. A checkpoint written inside an epoch (a
stop signal, train.checkpoint_every_steps) also holds its position: the batches done, every
process's view and objective generator states and running metric sums. The epoch's permutation
is drawn whole at its start, so resuming re-draws it and skips the batches done; the run then
ends bit-identical to one never stopped (on CPU). Both storages (affssl.data.storage) take their
batches from that permutation.

Faults (affssl.faults): a loss that is not finite or above train.max_loss stops the run before
the optimizer steps on it; SIGTERM/SIGINT/SIGUSR1 finish the step, write a step checkpoint and
stop. No checkpoint that holds inf or NaN is ever written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from affssl import checkpoint, convguard, distributed, faults, hostmem, loggers, monitor, precision, runenv, runs
from affssl.data import Dataset, batches, fingerprint, storage
from affssl.errors import UserError
from affssl.learner import Learner
from affssl.optim import build_optimizer, lr_at
from affssl.spec import RunSpec
from affssl.streams import OBJECTIVE_STREAMS, generator, objective_generators
from affssl.watch import Watch


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is cuda but no CUDA device is visible; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and distributed.world_size() > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


class Position(NamedTuple):
    """Where a checkpoint written inside an epoch stopped, for this process."""

    done: int  # batches of the epoch already trained
    views: Tensor  # (n,) uint8 state of the views generator
    objectives: dict[str, Tensor]  # (n,) uint8 state of each objective's generator (affine, rotation, care)
    sums: dict[str, Tensor]  # running sums of the epoch's loss terms


def pretrain(spec: RunSpec, run: Path, resume: bool = False, show_progress: bool = True,
             data: Dataset | None = None, allow_data_change: bool = False) -> Path:  # fmt: skip
    """Train per spec into the run folder; returns the path of the last checkpoint.

    A resume on data other than the checkpoint's (affssl.data.fingerprint) raises DataChanged before
    anything is written, unless `allow_data_change`: then the interrupted epoch starts over on the new
    data, and the steps go on from the checkpoint's.
    """
    spec, threads_line = runenv.apply_threads(spec)  # train.threads resolved: what spec.json and checkpoints keep
    loggers.require(spec.train.loggers)  # a missing extra stops the run before anything is written
    torch.manual_seed(spec.train.seed)  # initial weights
    device = resolve_device(spec.train.device)
    if device.type == "cpu":
        hostmem.keep_freed_memory()  # no page faults on activations every step (see hostmem)
    # data.storage resolved; the feed holds the decoded set on the device (tensor) or reads chunks (chunks)
    spec, feed = storage.prepare(spec, device, data, progress=show_progress and distributed.is_main())
    world, rank = distributed.world_size(), distributed.rank()
    if spec.train.batch_size % world:
        raise UserError(f"train.batch_size {spec.train.batch_size} must divide by the {world} processes")
    steps_per_epoch = feed.count // spec.train.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"{feed.count} training images are fewer than one batch of {spec.train.batch_size}; "
            "lower --batch-size or raise --limit"
        )
    total_steps = steps_per_epoch * spec.train.epochs

    learner = Learner(spec).to(device)
    if world > 1 and spec.train.sync_bn:  # BatchNorm statistics over the global batch, as one process
        learner = distributed.sync_batchnorm(learner)
    counts = learner.param_counts()
    policy = precision.resolve(spec.train.precision, spec.train.memory_format, device, trained=learner)
    learner = learner.to(memory_format=policy.memory_format)  # conv weights; activations follow them
    guarded = convguard.protect(learner, "backbone", crop_sizes(spec), spec.train.precision, policy.dtype, device)
    optimizer = build_optimizer(learner.optim_groups(), spec.optim, fused=device.type == "cuda")
    start_epoch, position, resume_step, notes = 0, None, None, [threads_line if show_progress else None]
    offset = 0  # steps before epoch 0 of this count of batches: ≠ 0 only on a resume on changed data
    if resume:
        tensors, header = checkpoint.load(run / runs.LAST, expect=checkpoint.TRAIN_FORMAT)
        changed = fingerprint.check(fingerprint.stored(header.get(fingerprint.HEADER)), feed.fingerprint,
                                    spec.data.dataset, allow_data_change)  # fmt: skip
        learner.load_state_dict(checkpoint.strip_prefix("model", tensors), strict=True)
        checkpoint.restore_optimizer(optimizer, tensors)
        start_epoch, resume_step = int(header["epoch"]), int(header["step"])
        notes.append(runenv.resume_line(header))
        position = None if changed else read_position(run / runs.LAST, header, tensors, device)
        offset = resume_step - start_epoch * steps_per_epoch if changed else 0  # steps go on from resume_step
        total_steps += offset
        if distributed.is_main():
            runs.write_spec(run, spec)  # records a changed RESUMABLE field (e.g. more epochs)
        if distributed.is_main():  # lines past the checkpoint are replayed, not duplicated
            kept = [r for r in runs.read_metrics(run) if r.get("step", 0) <= int(header["step"])]
            runs.rewrite_metrics(run, kept)
    elif distributed.is_main():
        run.mkdir(parents=True, exist_ok=True)
        runs.write_spec(run, spec)
    # fixed images for the online kNN (None: off, or no labels); decoded once now on chunk storage
    subset = monitor.pick(feed.data, spec) if isinstance(feed, storage.TensorFeed) else monitor.pick_chunks(
        feed, spec, show_progress and distributed.is_main())  # fmt: skip
    notes.append(monitor.startup_line(subset, spec) if show_progress else None)
    watcher = monitor.Monitor(subset, spec, policy, device) if subset is not None else None
    watch, shown, status = Watch(run, spec, resume_step), "", ""  # the progress line: loss and img/s, the monitor's
    seen = feed.fingerprint.as_text() if feed.fingerprint is not None else None

    # Notes once the run is sure to start (an error before it stays one line): threads, load, guarded layers.
    notes.append(runenv.busy_line(spec.train.threads, device))
    notes.append(f"fp32 inside {', '.join(f.describe() for f in guarded)}: torch's bf16 weight gradient is wrong "
                 "there (affssl/convguard.py)" if guarded and show_progress else None)  # fmt: skip
    for line in notes:
        runenv.say(line)
    model: nn.Module = learner
    if world > 1:
        model = nn.parallel.DistributedDataParallel(learner, device_ids=[device.index] if device.index is not None
                                                    else None)  # fmt: skip
    step_fn = torch.compile(model) if spec.train.compile else model
    local_batch = spec.train.batch_size // world
    last = run / runs.LAST
    guard = faults.DivergenceGuard(spec.train.max_loss, device, policy.name)
    guard.protect(optimizer)
    # Reading the guard's flag waits for the device. On CPU that is free, so every step is checked
    # before its backward pass. On CUDA a per-step read would stall the kernel queue, so it is read
    # at the steps that sync anyway (log lines, epoch ends, checkpoints); a fused optimizer skips
    # its updates in between (guard.protect). With several processes the read is one all-reduce of
    # two numbers that also agrees on a stop signal, so every rank stops at the same step
    # (gloo, 2 CPU processes: 0.45 ms a step measured on a busy 2-core machine).
    sync_every = 1 if device.type == "cpu" else spec.train.log_every
    every = spec.train.checkpoint_every_steps

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                        disable=not (show_progress and distributed.is_main()))  # fmt: skip
    done = position.done if position else 0
    with watch, progress, faults.StopSignals() as stop:
        if not resume:
            watch.record({"kind": "params", **counts, "head_overhead_frac": counts["head"] / counts["total"]})
        # what decides the bits besides the spec (threads, CPU ISA, torch), at each start or resume
        watch.record({"kind": "host", "step": resume_step or 0, **runenv.fingerprint()})
        task = progress.add_task("pretrain", total=total_steps, completed=offset + start_epoch * steps_per_epoch + done,
                                 status="")  # fmt: skip
        for epoch in range(start_epoch, spec.train.epochs):
            learner.train()
            learner.start_epoch(epoch)
            g_order = generator(spec.train.seed, "order", epoch, device)
            g_views = generator(spec.train.seed, "views", epoch, device, rank)
            g_objectives = objective_generators(spec.train.seed, epoch, device, rank)  # affine, rotation, care
            sums: dict[str, torch.Tensor] = {}
            skip = 0
            if position is not None:  # the first epoch of a resume from inside it
                g_views.set_state(position.views)
                for name, state in position.objectives.items():
                    g_objectives[name].set_state(state)
                sums, skip, position = dict(position.sums), position.done, None
            t_epoch = t_log = time.perf_counter()
            signum = 0
            order = list(batches(feed.count, spec.train.batch_size, g_order))  # the permutation, drawn whole
            lo, hi = rank * local_batch, (rank + 1) * local_batch  # this process's rows of each batch
            for i, (x, sizes) in enumerate(feed.epoch(order, lo, hi, skip), start=skip):  # skip: trained before
                step = offset + epoch * steps_per_epoch + i
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, steps_per_epoch, spec.optim) * group["lr_scale"]
                with policy.autocast():  # x: (b, C, S, S) uint8, or whole images padded with their sizes (b, 2)
                    loss, parts = step_fn(x, g_views, g_objectives) if sizes is None else step_fn(
                        x, g_views, g_objectives, sizes)  # fmt: skip
                guard.observe(step, parts)
                save_now = every is not None and (step + 1) % every == 0 and i + 1 < steps_per_epoch
                if (i + 1) % sync_every == 0 or i + 1 == steps_per_epoch or save_now:
                    signum = agree(guard, stop, optimizer.param_groups[0]["lr"])  # raises Diverged
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                learner.before_update()
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
                    watch.record({"kind": "step", **record})
                    status = f"loss {record['loss']:.4f}  {record['img_per_s']:.0f} img/s"
                    progress.update(task, status=status + shown)
                progress.advance(task)
                if world == 1 and stop.signum:  # one process: stop after this very step
                    signum = agree(guard, stop, optimizer.param_groups[0]["lr"])
                if (signum or save_now) and i + 1 < steps_per_epoch:
                    summary = {"epoch": epoch, "step": step + 1, "epoch_step": i + 1}
                    save_position(last, learner, optimizer, spec, summary, {"views": g_views, **g_objectives}, sums,
                                  guard, seen)  # fmt: skip
                    if signum:
                        raise faults.preempted(signum, run, step + 1, epoch + 1)
            seconds = time.perf_counter() - t_epoch
            means = distributed.mean(torch.stack(list(sums.values())))
            summary = {k: v.item() / steps_per_epoch for k, v in zip(sums, means, strict=True)}
            summary |= {"epoch": epoch + 1, "step": offset + (epoch + 1) * steps_per_epoch, "epoch_time_s": seconds,
                        "img_per_s": steps_per_epoch * spec.train.batch_size / seconds}  # fmt: skip
            check_finite(learner, optimizer, summary["step"], guard)
            scores = watcher.score(learner) if watcher and monitor.due(spec, epoch + 1) else {}  # all ranks
            shown = f"  {monitor.describe(scores)}" if scores else shown
            progress.update(task, status=status + shown)  # this epoch's scores, shown now, not at the next log line
            watch.record({"kind": "epoch", **summary, **scores})
            watch.epoch_end(final=epoch + 1 == spec.train.epochs)
            if distributed.is_main():
                save_checkpoint(last, learner, optimizer, spec, summary, data_fingerprint=seen)
                if (epoch + 1) % spec.train.checkpoint_every == 0 or epoch + 1 == spec.train.epochs:
                    save_checkpoint(runs.epoch_checkpoint(run, epoch + 1), learner, optimizer, spec, summary,
                                    data_fingerprint=seen)  # fmt: skip
            distributed.barrier()
            if signum and epoch + 1 < spec.train.epochs:
                raise faults.preempted(signum, run, summary["step"], epoch + 1)
    return last


def crop_sizes(spec: RunSpec) -> list[int]:
    """Every square size the encoder sees in this run (the convolution guard probes each): the global views',
    with multi-crop the local views', with rotation prediction E-SSL's small views' (CARE's and the affine warp's
    are the global size)."""
    local = [spec.augment.local_size_px] if spec.augment.local_crops else []
    small = [spec.rotation.side_px(spec.data.image_size_px)] if spec.rotation.enabled else []
    return list(dict.fromkeys([spec.data.image_size_px, *local, *small]))  # each size once, in that order


def agree(guard: faults.DivergenceGuard, stop: faults.StopSignals, lr: float) -> int:
    """The divergence flag and stop signal, agreed by all processes: raises Diverged, else the signal (0: none)."""
    flags = torch.stack([guard.seen, guard.seen.new_tensor(float(stop.signum))])  # (2,)
    seen, signum = distributed.maximum(flags).tolist()
    if seen:
        raise guard.error(lr)
    return int(signum)


def check_finite(learner: Learner, optimizer: torch.optim.Optimizer, step: int,
                 guard: faults.DivergenceGuard | None = None) -> None:  # fmt: skip
    """Never write a checkpoint that holds inf or NaN (a finite loss can still leave such weights)."""
    named = [(k, t) for k, t in learner.state_dict().items() if t.is_floating_point()]
    named += [(f"optimizer state of parameter {i}", v) for i, s in enumerate(optimizer.state.values())
              for v in s.values() if torch.is_tensor(v) and v.is_floating_point()]  # fmt: skip
    finite = torch.stack([torch.isfinite(t).all() for _, t in named])  # (T,) bool
    if distributed.maximum((~finite.all()).float()).item():
        first = next((k for (k, _), ok in zip(named, finite.tolist(), strict=True) if not ok), "in another process")
        fix = (guard or faults.DivergenceGuard(None, finite.device)).fix(optimizer.param_groups[0]["lr"])
        raise faults.Diverged(f"the weights are not finite after step {step} (first: {first}); nothing after the "
                              f"last finite step was saved; {fix}")  # fmt: skip


def save_position(path: Path, learner: Learner, optimizer: torch.optim.Optimizer, spec: RunSpec, summary: dict,
                  gens: dict[str, torch.Generator], sums: dict[str, Tensor],
                  guard: faults.DivergenceGuard | None = None,
                  data_fingerprint: str | None = None) -> None:  # fmt: skip
    """A checkpoint inside an epoch: the state plus every process's generators (views and each objective's, by
    purpose: position.views, position.affine, position.rotation, position.care) and metric sums (a collective)."""
    check_finite(learner, optimizer, summary["step"], guard)
    device = sums["loss"].device
    per_rank = {name: g.get_state() for name, g in gens.items()} | {"sums": torch.stack(list(sums.values()))}
    tensors = {f"position.{k}": distributed.stack(v.to(device)).cpu() for k, v in per_rank.items()}  # (world, …)
    if distributed.is_main():
        save_checkpoint(path, learner, optimizer, spec, summary | {"position_sums": list(sums)}, tensors,
                        data_fingerprint)  # fmt: skip
    distributed.barrier()


def read_position(path: Path, header: dict[str, str], tensors: dict[str, Tensor],
                  device: torch.device) -> Position | None:  # fmt: skip
    """This process's position inside an epoch, or None for a checkpoint written at an epoch's end."""
    done = int(header.get("epoch_step", "0"))
    if done == 0:
        return None
    world, rank = distributed.world_size(), distributed.rank()
    stored = tensors["position.views"].shape[0]
    if stored != world:
        raise checkpoint.CheckpointError(f"{path} stopped inside an epoch with {stored} processes; resume it with "
                                         f"{stored} (each process's random streams are part of the state)")  # fmt: skip
    sums = tensors["position.sums"][rank].to(device)  # (K,)
    names = json.loads(header["position_sums"])
    # clone: Generator.set_state reads a row of the (world, n) tensor from its storage's start; a checkpoint
    # from before the rotation and care streams holds the affine one only (the others were never drawn from)
    objectives = {name: tensors[f"position.{name}"][rank].clone() for name in OBJECTIVE_STREAMS
                  if f"position.{name}" in tensors}  # fmt: skip
    return Position(done, tensors["position.views"][rank].clone(), objectives,
                    {name: sums[k] for k, name in enumerate(names)})  # fmt: skip


def save_checkpoint(path: Path, learner: Learner, optimizer: torch.optim.Optimizer, spec: RunSpec,
                    summary: dict, position: dict[str, Tensor] | None = None,
                    data_fingerprint: str | None = None) -> None:  # fmt: skip
    """`position` (tensors position.*) and summary's epoch_step, position_sums: a checkpoint inside an epoch.
    `data_fingerprint`: what the run trains on (affssl.data.fingerprint), checked by --resume."""
    tensors = checkpoint.with_prefix("model", learner.state_dict()) | checkpoint.optimizer_tensors(optimizer)
    tensors |= position or {}
    inside = {k: summary[k] for k in ("epoch_step", "position_sums") if k in summary}
    inside |= {fingerprint.HEADER: data_fingerprint} if data_fingerprint is not None else {}
    meta = checkpoint.metadata_json(format=checkpoint.TRAIN_FORMAT, spec=spec.model_dump_json(), epoch=summary["epoch"],
                                    step=summary["step"], metrics=summary, **inside,
                                    **runenv.fingerprint())  # fmt: skip
    checkpoint.save(path, tensors, meta)
