"""One huge image among small ones (chunks storage): the run's peak memory stays that of a run without it.

A 6000 × 6000 px JPEG among 47 small ones, `data.workers=0` so every byte is in the one process whose
peak RSS the kernel reports (os.wait4), under an address-space limit (RLIMIT_AS) that the padded batch
of the old behaviour (16 × 3 × 6000² uint8, 4 × that once float) cannot fit in.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("litdata")

from test_chunks import TINY, make_folder

LIMIT_AS_BYTES = 6 << 30  # address space: torch's libraries and threads, not a 6000 px batch (~8.6 GB)


def peak_rss_kib(folder: Path, tmp_path: Path, name: str) -> int:
    """Peak RSS (KiB) of `affssl pretrain` on folder's images, chunks storage, one process, RLIMIT_AS set."""
    sets = [*TINY, f"data.dataset={folder}", f"data.root={tmp_path / name / 'cache'}", "data.storage=chunks",
            "data.workers=0", "train.epochs=1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS_BYTES, LIMIT_AS_BYTES))

    proc = subprocess.Popen([sys.executable, "-m", "affssl", "pretrain", "--no-progress", "--out",
                             str(tmp_path / name / "run"), *[a for o in sets for a in ("--set", o)]],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit)  # fmt: skip
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return usage.ru_maxrss


def test_one_huge_image_keeps_the_peak_memory_of_a_run_without_it(tmp_path):
    from PIL import Image

    small = make_folder(tmp_path / "small")
    huge = make_folder(tmp_path / "huge")
    (huge / "train" / "c0" / "000.jpg").unlink()  # 47 small + 1 huge: 3 full batches, the huge one in one
    Image.radial_gradient("L").resize((6000, 6000)).convert("RGB").save(huge / "train" / "c0" / "zz.jpg", quality=90)
    without = peak_rss_kib(small, tmp_path, "without")
    with_huge = peak_rss_kib(huge, tmp_path, "with")
    assert with_huge <= 1.5 * without, (
        f"peak RSS {with_huge / 1024:.0f} MiB with the image, {without / 1024:.0f} without"
    )
