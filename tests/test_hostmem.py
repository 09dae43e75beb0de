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


COLLECTOR = """
import gc, sys
from affssl import hostmem
hostmem.imports_done()
assert gc.isenabled() and gc.get_freeze_count() == 0  # a library caller: nothing changes
hostmem.hold_collection()
assert not gc.isenabled()
import torch, torchvision
hostmem.imports_done()
assert gc.isenabled() and gc.get_freeze_count() > 100_000  # the imported modules are exempt
frozen = gc.get_freeze_count()
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after the imports is collected as before
del a, b
assert gc.collect() >= 2 and gc.get_freeze_count() == frozen
print("ok")
"""

DURING = """
import gc, sys
import affssl.engine, affssl.eval, affssl.export
seen = {}
def spy(module, name):
    real = getattr(module, name)
    def wrapper(*args, **kwargs):
        seen[name] = gc.isenabled()
        return real(*args, **kwargs)
    setattr(module, name, wrapper)
spy(affssl.engine, "pretrain")
spy(affssl.export, "export")
spy(affssl.eval, "evaluate_knn")
from affssl.cli import main
sys.argv = ["affssl", *sys.argv[1:]]
try:
    main()
finally:
    print(seen)
"""


def test_the_collector_is_held_only_while_torch_imports():
    out = subprocess.run([sys.executable, "-c", COLLECTOR], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("command", ["pretrain", "export", "evaluate_knn"])
def test_commands_train_export_and_evaluate_with_the_collector_on(tmp_path, command):
    run = tmp_path / "run"
    sets = ["backbone.width=4", "data.image_size_px=16", "train.monitor_every=0"]
    args = ["pretrain", "--no-progress", "--out", str(run), "--epochs", "1", "--limit", "32", "--batch-size", "32"]
    args += [a for s in sets for a in ("--set", s)]
    if command != "pretrain":
        subprocess.run([sys.executable, "-m", "affssl", *args], check=True, capture_output=True)
        ckpt = str(run / "last.safetensors")
        args = ["export", ckpt, "--out", str(tmp_path / "bb.safetensors")] if command == "export" else [
            "eval", "knn", ckpt, "--json"]  # fmt: skip
    out = subprocess.run([sys.executable, "-c", DURING, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"{{'{command}': True}}"
