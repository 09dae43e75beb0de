"""CPUs a run may use (affinity mask, cgroup quota), how busy they are, and what a run states about them.

Oracles: hand-written cgroup files of both versions and /proc/stat samples with known answers, the
`taskset` command, and the run folder's own files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from affssl import cpus, runenv, runs
from affssl.engine import pretrain
from affssl.errors import UserError
from affssl.spec import RunSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = ["backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "data.limit=64", "train.epochs=1",
        "method.proj_hidden=32", "method.proj_out=16", "affine.head_hidden=32", "train.device=cpu"]  # fmt: skip
pytestmark = pytest.mark.usefixtures("keep_threads")  # conftest: the engine sets torch's threads for the process


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_cgroup_v2_quota_is_the_smallest_on_the_way_to_the_root(tmp_path):
    self_cgroup = write(tmp_path / "self", "0::/pod/app\n")
    write(tmp_path / "fs/pod/app/cpu.max", "max 100000\n")  # no limit of its own
    write(tmp_path / "fs/pod/cpu.max", "250000 100000\n")  # the pod's limit: 2.5 CPUs
    write(tmp_path / "fs/cpu.max", "max 100000\n")
    assert cpus.cgroup_quota(tmp_path / "fs", self_cgroup) == 2.5
    assert cpus.available(tmp_path / "fs", self_cgroup, cpus=set(range(8))) == 2  # rounded down
    assert cpus.available(tmp_path / "fs", self_cgroup, cpus={0}) == 1  # the affinity mask is smaller
    write(tmp_path / "fs/pod/cpu.max", "50000 100000\n")  # half a CPU: at least one thread
    assert cpus.available(tmp_path / "fs", self_cgroup, cpus=set(range(8))) == 1


def test_cgroup_v1_cfs_quota_and_no_quota(tmp_path):
    self_cgroup = write(tmp_path / "self", "12:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n")
    write(tmp_path / "fs/cpu,cpuacct/docker/x/cpu.cfs_quota_us", "300000\n")
    write(tmp_path / "fs/cpu,cpuacct/docker/x/cpu.cfs_period_us", "100000\n")
    assert cpus.cgroup_quota(tmp_path / "fs", self_cgroup) == 3.0
    assert cpus.available(tmp_path / "fs", self_cgroup, cpus=set(range(16))) == 3
    write(tmp_path / "fs/cpu,cpuacct/docker/x/cpu.cfs_quota_us", "-1\n")  # v1's "no limit"
    assert cpus.cgroup_quota(tmp_path / "fs", self_cgroup) is None
    assert cpus.available(tmp_path / "fs", self_cgroup, cpus=set(range(16))) == 16
    assert cpus.cgroup_quota(tmp_path / "absent", tmp_path / "absent-self") is None  # no cgroup files at all


def test_omp_num_threads_caps_auto(monkeypatch, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpus.available(tmp_path, tmp_path / "none", cpus=set(range(8))) == 3
    assert cpus.resolve(5) == 5  # a number is taken as given


def test_threads_option_takes_auto_or_a_count_and_sets_torch():
    assert runenv.threads_option("auto") == "auto" and runenv.threads_option(" AUTO ") == "auto"
    assert runenv.threads_option("3") == 3
    for bad in ("0", "-2", "1.5", "many", ""):
        with pytest.raises(UserError, match="--threads"):
            runenv.threads_option(bad)
    assert runenv.set_threads(1, "--threads") == (1, "threads: 1 (--threads)") and torch.get_num_threads() == 1


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")
def test_taskset_to_one_cpu_runs_one_thread():
    code = ("import torch; from affssl import cpus, runenv; from affssl.spec import load_spec; "
            "spec, line = runenv.apply_threads(load_spec('default')); "
            "print(cpus.available(), spec.train.threads, torch.get_num_threads(), line)")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip
    assert done.stdout.split()[:3] == ["1", "1", "1"], done.stdout
    assert "threads: 1 (1 CPUs in the affinity mask" in done.stdout


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")
def test_loader_workers_count_the_cpus_a_run_may_use_not_the_hosts():
    code = "from affssl.data.chunkread import default_workers; print(default_workers())"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # a thread cap, not a process cap
    one = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    assert one.stdout.split() == ["1"]
    every = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                           check=True)  # fmt: skip
    assert every.stdout.split() == [str(max(1, min(8, cpus.available(omp=False))))]


def test_busy_cpus_from_two_proc_stat_samples(tmp_path):
    stat = write(tmp_path / "stat", "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 10 70 10 0 0 0 0 0\ncpu1 0 0 0 100 0 0 0 0\n")
    assert cpus.cpu_times(stat) == {0: (20, 100), 1: (0, 100)}  # idle and iowait are not busy
    samples = iter([{0: (100, 1000), 1: (0, 1000), 2: (0, 10)}, {0: (150, 1100), 1: (100, 1100), 2: (10, 20)}])
    slept, clock = [], iter([0.0, 0.0, 0.5])
    busy = cpus.busy_cpus({0, 1}, 0.5, read=lambda: next(samples), own=lambda: 7, sleep=slept.append,
                          clock=lambda: next(clock))  # fmt: skip
    assert busy == pytest.approx(1.5) and slept == [0.5]  # cpu2 is outside the mask


def test_busy_cpus_leave_out_this_processs_own_time_and_start_at_an_old_enough_mark():
    start = cpus.Mark(10.0, {0: (100, 1000), 1: (0, 1000)}, own=50)
    samples = iter([{0: (200, 1100), 1: (50, 1100)}])
    owns, slept = iter([150]), []
    busy = cpus.busy_cpus({0, 1}, 0.5, since=start, read=lambda: next(samples), own=lambda: next(owns),
                          sleep=slept.append, clock=lambda: 11.0)  # fmt: skip
    assert slept == []  # the mark is 1 s old: nothing to wait for
    assert busy == pytest.approx(1.5 - 1.0)  # 100 of the 200 busy jiffies were this process's
    young, old, older = (cpus.Mark(t, {}, 0) for t in (9.8, 9.0, 5.0))
    assert cpus.window_start(0.5, [older, old, young], clock=lambda: 10.0) is old  # the youngest old enough
    assert cpus.window_start(0.5, [older], clock=lambda: 16.0) is None  # 11 s old: sample afresh
    assert cpus.window_start(0.5, [young], clock=lambda: 9.9) is young  # too young: sleep the rest from it
    assert cpus.window_start(0.5, [], clock=lambda: 9.9) is None


def test_own_cpu_time_is_read_from_proc_and_taken_out_of_the_busy_figure():
    """Own time from the real /proc/self/stat; the CPUs' jiffies injected, so load elsewhere changes nothing."""
    start = cpus.mark(read=lambda: {0: (0, 0), 1: (0, 0)})
    t = time.process_time()
    while time.process_time() - t < 0.6:  # this process keeps one CPU busy for 0.6 s of its own CPU time
        pass
    end = cpus.mark(read=lambda: {0: (300, 300), 1: (300, 300)})  # both CPUs fully busy over 3 s
    own = end.own - start.own
    assert own >= 50  # 0.6 s at 100 jiffies a second, less rounding: counted however busy the machine is
    mask = {0, 1}
    assert cpus.busy_between(mask, start, cpus.Mark(end.at_s, end.cpu, start.own)) == 2.0  # as if it were other work
    assert cpus.busy_between(mask, start, end) == pytest.approx(2.0 - own / 300)  # own time taken out


def test_busy_line_only_on_cpu_when_the_run_would_oversubscribe(monkeypatch):
    monkeypatch.setattr(cpus, "affinity", lambda: {0, 1})
    monkeypatch.setenv("AFFSSL_BUSY_SAMPLE_S", "0.5")
    busy = lambda load: lambda mask, seconds, since: load  # noqa: E731
    line = runenv.busy_line(2, torch.device("cpu"), busy(1.4))
    assert line is not None and "other work kept 1.4 of the 2 CPUs this run may use busy" in line
    assert "--set train.threads=1 fits" in line
    assert runenv.busy_line(2, torch.device("cpu"), busy(0.2)) is None  # a quiet machine
    assert runenv.busy_line(1, torch.device("cpu"), busy(1.9)) is None  # one thread: nothing fewer to suggest
    assert runenv.busy_line(2, torch.device("cuda"), busy(1.9)) is None  # only a CPU run
    monkeypatch.setenv("AFFSSL_BUSY_SAMPLE_S", "0")
    assert runenv.busy_line(2, torch.device("cpu"), busy(1.9)) is None  # off, as in the tests


def test_resolved_threads_and_host_are_stored_and_resume_states_a_change(tmp_path, capfd):
    run = tmp_path / "run"
    pretrain(load_spec("default", [*TINY, "train.threads=1"]), run, show_progress=False)
    saved = RunSpec.model_validate_json((run / runs.SPEC).read_text())  # still a loadable spec
    assert saved.train.threads == 1
    with safe_open(str(run / runs.LAST), framework="pt") as f:
        header = f.metadata()
    assert json.loads(header["spec"])["train"]["threads"] == 1 and header["threads"] == "1"
    assert header["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert header["cpu_isa"] == runenv.cpu_isa() and header["cpu_isa"].split()[1].startswith(header["cpu_capability"])
    assert header["torch_version"] == torch.__version__
    host = [r for r in runs.read_metrics(run) if r.get("kind") == "host"]
    assert host == [{"kind": "host", "step": 0, **runenv.fingerprint()}]
    capfd.readouterr()
    pretrain(load_spec("default", [*TINY, "train.threads=1", "train.epochs=2"]), run, resume=True,
             show_progress=False)  # fmt: skip
    assert "no longer bit-identical" not in capfd.readouterr().err  # the same host: nothing to say
    pretrain(load_spec("default", [*TINY, "train.threads=2", "train.epochs=3"]), run, resume=True,
             show_progress=False)  # fmt: skip
    lines = [line for line in capfd.readouterr().err.splitlines() if "bit-identical" in line]
    assert lines == ["note: resuming with threads 1 → 2: the run continues, but its tensors are no longer "
                     "bit-identical to an uninterrupted run"]  # fmt: skip


def test_cpu_isa_names_the_vendor_the_capability_and_the_extensions_torch_detects(tmp_path, monkeypatch):
    runenv.cpu_isa.cache_clear()
    runenv.cpu_model.cache_clear()
    info = write(
        tmp_path / "cpuinfo",
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon\n"
        "flags\t\t: fpu avx512f amx_bf16\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n",
    )
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for name, on in {"_is_avx512_bf16_supported": True, "_is_amx_tile_supported": True,
                     "_is_amx_fp16_supported": False, "_is_vnni_supported": True}.items():  # fmt: skip
        monkeypatch.setattr(torch.cpu, name, lambda on=on: on, raising=False)
    assert runenv.cpu_isa(info) == "GenuineIntel AVX512+amx_tile+avx512_bf16+vnni"
    assert runenv.cpu_model(info) == "Intel Xeon"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert (
        runenv.cpu_isa(write(tmp_path / "amd", "vendor_id : AuthenticAMD\n")) == "AuthenticAMD AVX512+avx512_bf16+vnni"
    )
    monkeypatch.delattr(torch.cpu, "_is_vnni_supported")  # an older torch without the check: not claimed
    assert runenv.cpu_isa(write(tmp_path / "old", "vendor_id : AuthenticAMD\n")) == "AuthenticAMD AVX512+avx512_bf16"


def test_resume_on_another_cpu_isa_says_so_in_one_line(monkeypatch):
    now = runenv.fingerprint()
    assert runenv.resume_line(now) is None
    other = now | {"cpu_isa": "GenuineIntel AVX512+amx_tile+avx512_bf16+vnni", "cpu_capability": "AVX512"}
    if other["cpu_isa"] == now["cpu_isa"]:
        other["cpu_isa"] = "AuthenticAMD AVX512+avx512_bf16+vnni"
    assert runenv.resume_line(other) == (f"resuming with CPU {other['cpu_isa']} → {now['cpu_isa']}: the run "
                                         "continues, but its tensors are no longer bit-identical to an "
                                         "uninterrupted run")  # fmt: skip
    older = {k: v for k, v in now.items() if k != "cpu_isa"}  # a checkpoint from before cpu_isa: its capability
    assert runenv.resume_line(older) is None
    assert "CPU AVX2 → " in runenv.resume_line(older | {"cpu_capability": "AVX2"})


def test_auto_is_resolved_before_the_spec_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus, "available", lambda *a, **k: 1)
    pretrain(load_spec("default", TINY), tmp_path / "run", show_progress=False)
    assert json.loads((tmp_path / "run" / runs.SPEC).read_text())["train"]["threads"] == 1
    assert torch.get_num_threads() == 1
