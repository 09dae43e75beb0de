"""Host memory for CPU training: keep freed tensor memory in the process instead of the kernel's.

glibc serves every allocation above its mmap threshold (32 MiB at most) with a fresh mmap and
gives it back with munmap on free. A ResNet-18's activations at batch 128 and 32 px are 32 MiB
each (128 × 64 × 32 × 32 × 4 B), so each training step maps about a gigabyte anew and the
kernel zero-fills it page by page: ~300,000 minor page faults and ~1 s of system time per
step on a 2-core machine. With mmap off for the heap and trimming disabled, the next step
reuses the blocks the last one freed (0 faults per step; benchmarks/throughput.py). The cost:
the process holds its peak heap until it exits, which a training run reaches every step
anyway. CUDA memory is unaffected (PyTorch's caching allocator already reuses it).
"""

from __future__ import annotations

import ctypes
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
