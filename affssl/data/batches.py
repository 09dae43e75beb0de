"""Index work on a loaded split: the epoch's batches, seeded subsets (`--limit`), stratified picks."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from affssl.data.dataset import Split


def subset(split: Split, n: int, seed: int) -> Split:
    """n items (all if n ≥ N), class proportions kept when labelled; same seed → same items, in order."""
    if n >= len(split.images):
        return split
    gen = torch.Generator().manual_seed(seed)
    if split.labels is None:
        idx = torch.randperm(len(split.images), generator=gen)[:n].sort().values  # (n,)
        return Split(split.images[idx], None)
    idx = stratified(split.labels, n, gen)
    return Split(split.images[idx], split.labels[idx])


def batches(n: int, batch_size: int, gen: torch.Generator, drop_last: bool = True) -> Iterator[Tensor]:
    """Yield int64 index tensors of one epoch: a permutation from gen split into batches."""
    chunks = list(torch.randperm(n, generator=gen).split(batch_size))  # drawn now: gen advances per call
    if drop_last and chunks and len(chunks[-1]) < batch_size:
        chunks.pop()
    return iter(chunks)


def stratified(labels: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """Sorted indices of n items; per-class counts by largest remainder (ties → lower class)."""
    classes, counts = labels.unique(return_counts=True)  # (C,), (C,)
    take, remainder = (counts * n).div(len(labels), rounding_mode="floor"), (counts * n) % len(labels)
    take[torch.argsort(-remainder, stable=True)[: n - int(take.sum())]] += 1
    picks = []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        members = (labels == c).nonzero().squeeze(1)  # (n_c,)
        picks.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.cat(picks).sort().values  # (n,)
