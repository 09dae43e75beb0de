"""hostmem.keep_freed_memory: large tensors reuse freed heap blocks (no page faults) and the heap stops growing."""

import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from affssl import hostmem
if sys.argv[1] == "keep":
    assert hostmem.keep_freed_memory()
def rss_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
def cycles(n):  # n tensors of 64 MiB, each filled then freed, as a training step's activations are
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
cycles(20)  # the heap settles (alignment splits leave a few blocks behind at first)
rss_before = rss_kib()
print(cycles(20), rss_kib() - rss_before)
"""


def faults_and_growth_kib(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    faults, growth = out.stdout.split()[-2:]
    return int(faults), int(growth)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_freed_blocks_are_reused_without_page_faults():
    pages = 20 * 64 * 2**20 // 4096
    faults, _ = faults_and_growth_kib("default")
    assert faults > pages // 2  # glibc maps a block this large afresh each time, then unmaps it
    faults, growth_kib = faults_and_growth_kib("keep")
    assert faults < 200  # reused from the heap
    assert growth_kib < 64 * 1024  # and the heap does not grow
