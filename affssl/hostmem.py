"""Host memory for CPU training: keep freed tensor memory in the process instead of the kernel's.

glibc serves every allocation above its mmap threshold (32 MiB at most) with a fresh mmap and
gives it back with munmap on free. A ResNet-18's activations at batch 128 and 32 px are 32 MiB
each (128 × 64 × 32 × 32 × 4 B), so each training step maps about a gigabyte anew and the
kernel zero-fills it page by page: ~300,000 minor page faults and ~1 s of system time per
step on a 2-core machine. With mmap off for the heap and trimming disabled, the next step
reuses the blocks the last one freed (0 faults per step; benchmarks/throughput.py). The cost:
the process holds its peak heap until it exits, which a training run reaches every step
anyway. CUDA memory is unaffected (PyTorch's caching allocator already reuses it).

The Python heap, in a command-line process: importing torch and torchvision makes about 420,000
objects that live until the process ends (torchvision.ops imports torch._dynamo, which brings
sympy). Python's cyclic collector walks all live objects at each full collection: 6 of them while
these imports run (0.57 s on this 2-core machine) and one more as the interpreter exits (0.7 s),
on every `affssl` command. `affssl.cli.main` holds the collector off while a command imports
(`hold_collection`); `imports_done` then exempts what is alive (`gc.freeze`: the modules) and
turns it back on, so every object made later is collected as before; the exiting process freezes
again (`exiting`). Nothing numeric depends on it; a library caller that never calls
`hold_collection` sees no change.
"""

from __future__ import annotations

import ctypes
import gc
import sys

M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Switch glibc's malloc to reuse freed large blocks; False (and no change) off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc
        return False
    # mallopt returns 1 on success; -1 for M_TRIM_THRESHOLD means never trim (mallopt(3)).
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))


def hold_collection() -> None:
    """Turn Python's cyclic collector off while a command imports torch (back on at `imports_done`)."""
    gc.disable()


def imports_done() -> None:
    """Exempt the objects alive now (the imported modules) from the collector and turn it back on; a no-op
    unless `hold_collection` turned it off."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def exiting() -> None:
    """Spare the exiting interpreter its last walk over every object (the process ends; nothing is freed late)."""
    gc.freeze()
