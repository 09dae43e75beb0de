"""The tensor storage stays bit-identical across data-path changes: pinned sha256 of a default digits run.

The digests were computed on the code before the data package (commit 7e51ebd) with one thread.
They pin this machine's torch build (2.14.1, CPU kernels); the test skips on another torch version.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from affssl.data import load_dataset
from affssl.engine import pretrain
from affssl.spec import load_spec

PINNED_TORCH = "2.14.1"
DATA_SHA256 = "6dc7929cb274a560036594f9031ddabaf51d7b671c41153868d415bb23ae6936"
CHECKPOINT_SHA256 = "db992403524dffa9b9afcd5b5b178d6bb41d1a2d5f9f61f8c9a4fbed71f06a77"
OVERRIDES = ["train.epochs=1", "data.limit=256", "backbone.width=8", "train.batch_size=64", "train.threads=1"]


def digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over (name, raw bytes) of each tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(torch.__version__.split("+")[0] != PINNED_TORCH, reason=f"digests pinned on torch {PINNED_TORCH}")
def test_default_digits_run_is_bit_identical_to_the_pinned_one(tmp_path, one_thread):
    spec = load_spec("default", [f"data.root={tmp_path / 'cache'}", *OVERRIDES])
    data = load_dataset(spec.data, seed=spec.train.seed)
    train, test = data.train, data.test
    split = {"train": train.images, "test": test.images, "ltrain": train.labels, "ltest": test.labels}
    assert digest(split) == DATA_SHA256
    last = pretrain(spec, tmp_path / "run", show_progress=False)
    assert digest(load_file(last)) == CHECKPOINT_SHA256
