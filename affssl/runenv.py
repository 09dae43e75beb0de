"""What the host gives a run, set and stated at its start: threads, the busy-machine line, what a resume changed.

Bit-identical results hold on CPU for the same seed at the same thread count, CPU ISA and torch version;
docs/reproducibility.md says why. The CPU ISA is the instruction set as torch's kernels see it: torch's
dispatch level (`torch.backends.cpu.get_cpu_capability()`, "AVX512" on an AMD EPYC and on an Intel Xeon
alike), the vendor (MKL and oneDNN pick other code paths per vendor) and the extensions torch detects
beyond that level (avx512_bf16, amx_tile, amx_fp16, vnni), e.g. "AuthenticAMD AVX512+avx512_bf16+vnni":
an AMD EPYC with AVX512-BF16 and an Intel Xeon with AMX-BF16 both say "AVX512" yet round differently.
The engine stores the resolved thread count in the spec (RUN/spec.json, the checkpoint header), and the
ISA, the CPU's model name and the torch version in the checkpoint header and the run's first
metrics.jsonl record (`kind: host`); a resume that differs in threads, ISA or torch continues with one
line saying so. `affssl eval` takes its own `--threads` (auto by default: this machine's figure, never
the number a checkpoint's spec stores from the machine it trained on), and an ablation probes each run
at that run's train.threads (a worker's share with --jobs); eval records keep the count used and the ISA.

The busy line: on a CPU run, /proc/stat is sampled over at least AFFSSL_BUSY_SAMPLE_S seconds (0.5 by
default; 0 turns the check off, as the tests do), from a mark the CLI took earlier where one fits
(affssl.cpus), so it rarely waits. It only informs; `threads = "auto"` never depends on load.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import cache
from pathlib import Path

import torch

from affssl import cpus, distributed
from affssl.errors import UserError
from affssl.spec import RunSpec

# The measurement of the default run on 2 cores: 22 s alone, 84–109 s beside a 2-thread matrix product.
_COST = "a step waits for the slowest thread, so the run can take several times as long (benchmarks/contention.py)"


def with_threads(spec: RunSpec, threads: int) -> RunSpec:
    """The spec with train.threads resolved to a number (what RUN/spec.json and checkpoints store)."""
    return spec.model_copy(update={"train": spec.train.model_copy(update={"threads": threads})})


def set_threads(threads: str | int, given_by: str = "train.threads") -> tuple[int, str]:
    """Set torch's intra-op threads ("auto": resolved on this machine, affssl.cpus); the count and its line."""
    n = cpus.resolve(threads)
    torch.set_num_threads(n)
    return n, f"threads: {cpus.describe(n) if threads == 'auto' else f'{n} ({given_by})'}"


def apply_threads(spec: RunSpec) -> tuple[RunSpec, str]:
    """Set torch's intra-op threads per train.threads; returns the resolved spec and the line that says so."""
    threads, line = set_threads(spec.train.threads)
    return with_threads(spec, threads), line


def threads_option(text: str) -> str | int:
    """A `--threads` value: "auto" or a whole number ≥ 1; anything else is a one-line error."""
    value = text.strip().lower()
    if value == "auto":
        return "auto"
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"--threads {text!r}: give auto or a whole number of threads (at least 1)")
    return int(value)


# torch's own CPU feature checks (cpuinfo), what its kernels dispatch on beyond the capability level;
# a torch that lacks one of them cannot use that extension either
_EXTENSIONS = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported",
               "amx_fp16": "_is_amx_fp16_supported", "vnni": "_is_vnni_supported"}  # fmt: skip
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name: str, cpuinfo: Path) -> str | None:
    """The first `name : value` of /proc/cpuinfo (None where there is no such file or field)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


@cache
def cpu_isa(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's instruction set as torch's kernels see it: "VENDOR CAPABILITY+ext+ext" (module docstring)."""
    vendor = _cpuinfo_field("vendor_id", cpuinfo) or platform.machine() or "unknown"
    found = sorted(name for name, check in _EXTENSIONS.items() if getattr(torch.cpu, check, lambda: False)())
    return " ".join([vendor, "+".join([torch.backends.cpu.get_cpu_capability(), *found])])


@cache
def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name, for people (the bits are keyed by cpu_isa)."""
    return _cpuinfo_field("model name", cpuinfo) or platform.processor() or "unknown"


def fingerprint() -> dict[str, str]:
    """What besides the spec and seed decides a CPU run's bits: stored in every training checkpoint's header.

    cpu_capability is kept beside cpu_isa for readers of older records; cpu_model only names the machine.
    """
    return {"threads": str(torch.get_num_threads()), "cpu_isa": cpu_isa(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu_model(),
            "torch_version": torch.__version__}  # fmt: skip


def resume_line(header: dict[str, str]) -> str | None:
    """One line when this process differs from the one that wrote the checkpoint in what decides the bits.

    A checkpoint from before cpu_isa was recorded is compared on cpu_capability, the key it has.
    """
    now = fingerprint()
    isa = "cpu_isa" if "cpu_isa" in header else "cpu_capability"
    names = {"threads": "threads", isa: "CPU", "torch_version": "torch"}
    changed = [f"{names[k]} {header[k]} → {now[k]}" for k in names if k in header and header[k] != now[k]]
    if not changed:
        return None
    return (f"resuming with {', '.join(changed)}: the run continues, but its tensors are no longer bit-identical "
            "to an uninterrupted run")  # fmt: skip


def busy_line(threads: int, device: torch.device, sample=cpus.busy_cpus) -> str | None:
    """On CPU, one line when other work already keeps the run's CPUs busy: how busy, the cost, the fitting count."""
    seconds = float(os.environ.get("AFFSSL_BUSY_SAMPLE_S", "0.5"))
    if device.type != "cpu" or seconds <= 0 or threads <= 1 or not distributed.is_main():  # 1 thread: nothing less
        return None
    mask = cpus.affinity()
    busy = sample(mask, seconds, cpus.window_start(seconds))
    free = len(mask) - busy
    if busy < 0.5 or threads <= max(1.0, free + 0.25):
        return None
    fits = max(1, int(free + 0.5))
    return (f"other work kept {busy:.1f} of the {len(mask)} CPUs this run may use busy as it started; with {threads} "
            f"threads {_COST}; --set train.threads={fits} fits what is free")  # fmt: skip


def say(line: str | None, show: bool = True) -> None:
    """A note on stderr, from the main process only (None or show=False: nothing)."""
    if line and show and distributed.is_main():
        print(f"note: {line}", file=sys.stderr, flush=True)
