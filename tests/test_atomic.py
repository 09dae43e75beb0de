"""Files written through a temp file and a rename get the user's umask, as `open(path, "w")` would give them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from affssl import atomic, checkpoint, runs
from affssl.data import tensorfile
from affssl.export import export
from affssl.spec import load_spec


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_checkpoints_exports_and_records_get_the_umask(umask, tiny_checkpoint, tmp_path):
    want = 0o666 & ~umask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what any file gets
    assert mode(plain) == want
    checkpoint.save(tmp_path / "ckpt.safetensors", {"w": torch.zeros(2)}, {"format": "test"})
    tensorfile.write_atomic(tmp_path / "cache.safetensors", {"x": torch.zeros(2, dtype=torch.uint8)}, {})
    runs.write_spec(tmp_path, load_spec("default", []))
    export(tiny_checkpoint, tmp_path / "bb.safetensors")
    for name in ("ckpt.safetensors", "cache.safetensors", runs.SPEC, "bb.safetensors"):
        assert mode(tmp_path / name) == want, name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_temp_names_are_unique_and_in_the_destination_folder(tmp_path):
    made = {atomic.temp_beside(tmp_path / "a.bin") for _ in range(20)}
    assert len(made) == 20 and all(p.parent == tmp_path and p.name.startswith(".a.bin.") for p in made)


def test_an_onnx_export_gets_the_umask(tiny_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    old = os.umask(0o027)
    try:
        export(tiny_checkpoint, tmp_path / "bb.onnx", "onnx")
    finally:
        os.umask(old)
    assert mode(tmp_path / "bb.onnx") == 0o640
