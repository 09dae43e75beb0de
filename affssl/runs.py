"""The run-directory contract: file names, creating or reopening a run folder, metric lines.

RUN/spec.json          resolved spec, written before training starts
RUN/metrics.jsonl      one JSON object per logged interval and per epoch
RUN/last.safetensors   latest checkpoint; RUN/epoch-NNNN.safetensors every N epochs
RUN/eval/*.json        results written by `affssl eval`
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from affssl.errors import UserError
from affssl.spec import RunSpec

SPEC = "spec.json"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"
EVAL = "eval"


def epoch_checkpoint(run: Path, epoch: int) -> Path:
    return run / f"epoch-{epoch:04d}.safetensors"


def default_name(spec: RunSpec) -> Path:
    tag = "affine" if spec.affine.enabled else "base"
    return Path("runs") / f"{spec.method.name}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare(run: Path, resume: bool, overwrite: bool) -> None:
    """Check that `run` may be written: new or empty, or --resume / --overwrite given."""
    if run.exists() and not run.is_dir():
        raise UserError(f"--out {run} is a file; name a folder")
    busy = run.is_dir() and any(run.iterdir())
    if resume:
        if not (run / LAST).is_file():
            raise UserError(f"nothing to resume in {run}: no {LAST}; drop --resume to start a new run")
        return
    if busy and not overwrite:
        raise UserError(f"{run} already holds files; pass --resume to continue it, --overwrite to replace it, "
                        "or another --out")  # fmt: skip
    if busy and overwrite:
        for child in run.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    run.mkdir(parents=True, exist_ok=True)


def write_spec(run: Path, spec: RunSpec) -> None:
    (run / SPEC).write_text(spec.model_dump_json(indent=2) + "\n")


def append_metrics(run: Path, record: dict) -> None:
    with open(run / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run: Path) -> list[dict]:
    path = run / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
