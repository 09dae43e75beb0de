"""The run's random streams: one torch.Generator per purpose, epoch and process (design.md decision 2).

    order     the epoch's permutation of the training images (the engine)
    views     the base method's views and local crops, and so each view's parameters (affssl.augment)
    affine    the affine module's φ (affssl.affine_block)
    rotation  E-SSL's small third views (affssl.objectives.rotation)
    care      CARE's augmentation draws shared by the images of a chunk (affssl.objectives.care)

A stream is seeded from a hash of (seed, purpose, epoch, rank), so streams never overlap and a new
purpose never moves the draws of another: adding the rotation and CARE streams left every view and φ
of earlier runs where it was. The engine, the preview and the objectives all draw from here.
"""

from __future__ import annotations

import hashlib

import torch

PURPOSES: tuple[str, ...] = ("order", "views", "affine", "rotation", "care")
# The streams an auxiliary objective draws from, by the objective's name; each is that objective's own.
OBJECTIVE_STREAMS: tuple[str, ...] = ("affine", "rotation", "care")


def generator(seed: int, purpose: str, epoch: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """A generator for one purpose and epoch, seeded from a hash so streams never overlap."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random stream {purpose!r}; the purposes are {', '.join(PURPOSES)}")
    key = hashlib.sha256(f"{seed}/{purpose}/{epoch}/{rank}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(key[:8], "little") >> 1)


def objective_generators(seed: int, epoch: int, device: torch.device, rank: int = 0) -> dict[str, torch.Generator]:
    """Every objective's stream for one epoch and process, by name (unused streams cost one seeding each)."""
    return {name: generator(seed, name, epoch, device, rank) for name in OBJECTIVE_STREAMS}
