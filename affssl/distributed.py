"""The few torch.distributed facts the rest of the code needs; single process when not initialised.

Losses that need the whole global batch (SimCLR's negatives, Barlow Twins' cross-correlation)
see every rank's embeddings through a gradient-preserving all-gather. Every rank then computes
the same global loss; the all-gather's backward sums the ranks' gradients into each shard, and
DDP's average over ranks gives exactly the single-process gradient of the full batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def gather(x: Tensor) -> Tensor:
    """(B, D) per rank → (world·B, D) in rank order, differentiable; identity in one process."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def setup() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); gloo on CPU, NCCL on GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
