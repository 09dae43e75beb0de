"""The run-directory contract: file names, creating or reopening a run folder, metric lines.

RUN/spec.json          resolved spec, written before training starts
RUN/metrics.jsonl      one JSON object per logged interval and per epoch
RUN/last.safetensors   latest checkpoint; RUN/epoch-NNNN.safetensors every N epochs
RUN/eval/*.json        results written by `affssl eval`
RUN/curves.png         the run's curves, redrawn after each epoch (affssl.curves)
RUN/loggers.json       the runs of train.loggers, continued on --resume (affssl.loggers)
RUN/.lock              present while a command writes the run (affssl.runlock)

A write that fails (full disk, read-only folder) ends in one line naming the file and the free
space; spec.json (and metrics.jsonl, cut back on resume) is replaced atomically, and a metrics line
is either appended whole or not at all.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

from affssl import atomic
from affssl.errors import UserError, write_failed
from affssl.spec import AUX, RunSpec

SPEC = "spec.json"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"
EVAL = "eval"
LOCK = ".lock"


def epoch_checkpoint(run: Path, epoch: int) -> Path:
    return run / f"epoch-{epoch:04d}.safetensors"


def default_name(spec: RunSpec) -> Path:
    tag = "+".join(name for name in AUX if getattr(spec, name).enabled) or "base"  # e.g. affine, augself+care
    return Path("runs") / f"{spec.method.name}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def check(run: Path, resume: bool, overwrite: bool) -> bool:
    """Refuse a `run` that may not be written (writes nothing); returns whether it holds files to replace.

    New or empty is fine; a folder with files needs --resume (and a checkpoint) or --overwrite.
    """
    if run.exists() and not run.is_dir():
        raise UserError(f"--out {run} is a file; name a folder")
    busy = run.is_dir() and any(p.name != LOCK for p in run.iterdir())  # the lock is this command's own
    saved = (run / LAST).is_file()
    if resume and not saved:
        again = "pass --overwrite instead of --resume to start it again" if busy else "drop --resume to start a new run"
        raise UserError(f"nothing to resume in {run}: no {LAST}, so no step of it was saved; {again}")
    if busy and not overwrite and not resume:
        if not saved and (run / SPEC).is_file():  # a run that ended before its first checkpoint (an older affssl's)
            raise UserError(f"{run} holds a run that saved no checkpoint; pass --overwrite to start it again, or "
                            "another --out")  # fmt: skip
        raise UserError(f"{run} already holds files; pass --resume to continue it, --overwrite to replace it, "
                        "or another --out")  # fmt: skip
    return busy


def prepare(run: Path, resume: bool, overwrite: bool) -> None:
    """Check that `run` may be written (`check`), then empty it for --overwrite and create it."""
    busy = check(run, resume, overwrite)
    if resume:
        return
    try:
        if busy and overwrite:
            for child in (p for p in run.iterdir() if p.name != LOCK):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        run.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_failed(run, err) from None


class UndoOnFailure:
    """Within: a failure that leaves no checkpoint in `run` removes what the command created (README: a failing
    command creates nothing), so the same command can simply be run again.

    Only once `arm()`ed, when the command holds the run's lock: a command refused by another writer's lock
    touches nothing. Files `run` held before are kept (with --overwrite the command has replaced them:
    nothing of theirs is left); the folder itself, and any parent made for it, is removed only when the
    command created it. `on=False`: does nothing (a --resume, or a process other than rank 0).
    """

    def __init__(self, run: Path, overwrite: bool = False, on: bool = True):
        self.run, self.on, self.armed = run, on, False
        self.made = [p for p in (run, *run.parents) if not p.exists()]  # the folders this command will create
        self.kept = set() if overwrite or not run.is_dir() else {p.name for p in run.iterdir()}

    def arm(self) -> None:
        self.armed = self.on

    def __enter__(self) -> UndoOnFailure:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None and self.armed and not (self.run / LAST).exists():
            _remove_new(self.run, self.kept, self.made)


def _remove_new(run: Path, kept: set[str], made: list[Path]) -> None:
    """Remove what is in `run` but not in `kept`, then the folders of `made` that are empty (deepest first)."""
    try:
        for child in (p for p in run.iterdir() if p.name not in kept) if run.is_dir() else ():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for folder in made:
            folder.rmdir()
    except OSError:
        pass  # a folder someone else wrote into meanwhile stays: it is no longer only this command's


def write_spec(run: Path, spec: RunSpec) -> None:
    """RUN/spec.json, replaced atomically (a failed write leaves the previous file)."""
    _replace(run / SPEC, spec.model_dump_json(indent=2) + "\n")


def rewrite_metrics(run: Path, records: list[dict]) -> None:
    """RUN/metrics.jsonl replaced atomically by `records` (on resume: the lines up to the checkpoint)."""
    _replace(run / METRICS, "".join(json.dumps(r) + "\n" for r in records))


def _replace(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, then os.replace it; a failed write leaves the previous file."""
    try:
        with atomic.replacing(path) as tmp:
            tmp.write_text(text)
    except OSError as err:
        raise write_failed(path, err) from None


def append_metrics(run: Path, record: dict) -> None:
    """Append one JSON line with one write; on a failed or short write the file is cut back to its end."""
    path, line = run / METRICS, (json.dumps(record) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, "short write")
            except OSError:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)
    except OSError as err:
        raise write_failed(path, err) from None


def read_metrics(run: Path) -> list[dict]:
    path = run / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
