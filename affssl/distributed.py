"""The few torch.distributed facts the rest of the code needs; single process when not initialised.

Losses that need the whole global batch (SimCLR's negatives, Barlow Twins' cross-correlation)
see every rank's embeddings through a gradient-preserving all-gather. Every rank then computes
the same global loss; the all-gather's backward sums the ranks' gradients into each shard, and
DDP's average over ranks gives exactly the single-process gradient of the full batch.

BatchNorm statistics can span the global batch too (`sync_batchnorm`): torch's SyncBatchNorm on
CUDA, and on CPU (gloo), where torch has none, `GlobalBatchNorm`, the same arithmetic written with
two differentiable all-reduces. With it, one step of N processes on N slices equals one step of
one process on the whole batch (tests/test_distributed.py checks loss, gradients and buffers).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK); 0 in one process."""
    return int(os.environ.get("LOCAL_RANK", "0")) if world_size() > 1 else 0


def gather(x: Tensor) -> Tensor:
    """(B, D) per rank → (world·B, D) in rank order, differentiable; identity in one process.

    Every rank must pass the same shape. Backward sums the ranks' gradients of the gathered
    tensor and returns this rank's rows: Σ_q ∂L_q/∂x_r.
    """
    return x if world_size() == 1 else _Gather.apply(x)


def all_reduce_sum(x: Tensor) -> Tensor:
    """Σ over ranks, differentiable (backward: Σ over ranks of the gradients); identity in one process."""
    return x if world_size() == 1 else _AllReduceSum.apply(x)


def mean(x: Tensor) -> Tensor:
    """The mean over ranks of a tensor (not differentiable): for logging a global quantity."""
    if world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


def maximum(x: Tensor) -> Tensor:
    """The element-wise maximum over ranks (not differentiable): for flags every rank must agree on."""
    if world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def stack(x: Tensor) -> Tensor:
    """(…) per rank → (world, …) in rank order (not differentiable); every rank must pass the same shape."""
    if world_size() == 1:
        return x.unsqueeze(0)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.stack(parts)


class _Gather(torch.autograd.Function):
    # All-gather forward, all-reduce backward: works on every backend (gloo has no reduce-scatter)
    # and avoids the deprecated torch.distributed.nn.functional collectives.
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        n = grad.shape[0] // world_size()
        return grad[rank() * n : (rank() + 1) * n]


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span every rank's batch, on any backend (CPU/gloo).

    torch.nn.SyncBatchNorm is CUDA-only; this is the same arithmetic: mean and biased variance of
    the global batch (two differentiable all-reduces, so gradients flow through the statistics of
    other ranks' samples as in one process), running variance unbiased with the global count.
    Parameters, buffers and state-dict keys are those of BatchNorm1d/2d; in eval mode or in one
    process it is plain BatchNorm.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions, got {x.dim()}")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        dtype = x.dtype
        if dtype in (torch.bfloat16, torch.float16):  # statistics in fp32 under autocast, as BatchNorm keeps them
            x = x.float()
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        total = all_reduce_sum(torch.cat([x.sum(dims), x.new_full((1,), x.numel() // c)]))  # (C + 1,)
        count = total[c].detach()
        mu = total[:c] / count  # (C,)
        centred = x - mu.view(shape)
        var = all_reduce_sum(centred.pow(2).sum(dims)) / count  # (C,) biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mu, m)
                self.running_var.lerp_(var * count / (count - 1), m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        y = y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y
        return y.to(dtype)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm in `module` → statistics over the global batch (same keys, same tensors).

    CUDA: torch.nn.SyncBatchNorm; elsewhere GlobalBatchNorm. Returns the converted module (the
    same object unless `module` itself is a BatchNorm).
    """
    if any(p.is_cuda for p in module.parameters()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)  # fmt: skip
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, sync_batchnorm(child))
    return out


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


@contextlib.contextmanager
def local_rank0_first() -> Iterator[None]:
    """Local rank 0 runs the block first, the node's other ranks after it (every rank passes one barrier).

    The barrier is passed also when rank 0's block raises, so the others go on (and meet the same
    error themselves) instead of waiting for ever. One process: just the block.
    """
    first = local_rank() == 0
    if not first:
        barrier()
    try:
        yield
    finally:
        if first:
            barrier()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
