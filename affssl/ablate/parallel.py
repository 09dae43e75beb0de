"""Several runs of an ablation at once (`affssl ablate --jobs N`), each in its own worker process.

On a few CPU cores the small encoders of a CPU study use their intra-op threads poorly (width 16,
16 px, bf16, 2 cores: one process on 2 threads ≈ 2,600–3,000 img/s of bare forward + backward, two
one-thread processes ≈ 3,600–3,900 img/s together; the engine's step 985 against 1,531 img/s,
benchmarks/jobs_speed.py), so an ablation finishes sooner running N runs at once with 1/N of the
threads each. Runs stay ordinary run folders: a worker trains and evaluates one run exactly as the
sequential loop does (runner.advance). An equal-time run starts only after its base and + affine
runs are done in this call, and its time ratio compares runs that trained under the same setting
(one worker's threads each, beside other workers).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

import torch

from affssl import cpus
from affssl.ablate import study
from affssl.ablate.planning import EvalSettings, PlannedRun
from affssl.ablate.runner import Event, Reporter, State, advance, prepare
from affssl.data import Dataset
from affssl.runenv import with_threads

_WORKER_CACHE: dict[str, Dataset] = {}  # per worker process: its last loaded training data


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _worker_run(run: PlannedRun, out: Path, ev: EvalSettings, state: State, m: study.Match | None) -> float:
    t0 = time.perf_counter()
    run = replace(run, spec=with_threads(run.spec, torch.get_num_threads()))  # the worker's share, not "auto"
    advance(run, out, ev, state, m, _WORKER_CACHE)
    return time.perf_counter() - t0


def worker_threads(jobs: int, threads: str | int = "auto") -> int:
    """Torch threads per worker: a share of train.threads (auto: the CPUs a run may use, affssl.cpus), ≥ 1."""
    return max(1, cpus.resolve(threads) // jobs)


def execute_parallel(planned: list[PlannedRun], out: Path, ev: EvalSettings, report: Reporter, jobs: int) -> None:
    """Up to `jobs` runs at once in spawned worker processes; the first ready run in plan order starts next.

    A run is ready when it is not an equal-time run, or when its base and + affine runs are done.
    The first failure stops the scheduling (runs in flight finish, the rest are not started) and is
    raised here; finished runs are kept, so calling the ablation again completes the rest.
    """
    total = len(planned)
    index = {run.folder: i for i, run in enumerate(planned, 1)}
    waiting = list(planned)
    done: set[Path] = set()
    running: dict[Future, PlannedRun] = {}

    def ready(run: PlannedRun) -> bool:
        return run.variant.kind != "equal-time" or all(r.folder in done for r in study.references(run, planned))

    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
    threads = worker_threads(jobs, planned[0].spec.train.threads if planned else "auto")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init, initargs=(threads,)) as pool:
        try:
            while waiting or running:
                while len(running) < jobs and (run := next((r for r in waiting if ready(r)), None)) is not None:
                    waiting.remove(run)
                    i = index[run.folder]
                    run, state, m = prepare(run, planned, out, ev)
                    if state == "done":
                        done.add(run.folder)
                        report(Event(i, total, run, "skip"))
                        continue
                    report(Event(i, total, run, state))
                    running[pool.submit(_worker_run, run, out, ev, state, m)] = run
                if not running:
                    if waiting:  # runs wait for references that are not in the plan
                        raise RuntimeError(f"ablate: no run can start: {', '.join(str(r.folder) for r in waiting)}")
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    run = running.pop(future)
                    seconds = future.result()  # a worker's error is raised here
                    done.add(run.folder)
                    report(Event(index[run.folder], total, run, "done", seconds))
        except BaseException:
            for future in running:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
