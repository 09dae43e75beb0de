"""What a run shows while it trains, written by rank 0: metrics.jsonl, the loggers and RUN/curves.png.

The engine hands every record to `Watch.record` (appended to metrics.jsonl, then sent to the
loggers of train.loggers) and calls `Watch.epoch_end` after each epoch's record (curves.png is
redrawn from metrics.jsonl). Other ranks' Watch does nothing. Used as a context manager: the
loggers open on entry (a failure there stops the run before its first step) and close on exit,
marked failed when the run ends in an exception. A picture that cannot be written warns once and
the run goes on (design rule 17: watching never changes training).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from affssl import curves, distributed, runs
from affssl.loggers import Loggers
from affssl.spec import RunSpec


class Watch:
    def __init__(self, run: Path, spec: RunSpec, resume_step: int | None = None):
        self.run, self.spec, self.resume_step = run, spec, resume_step
        self.main = distributed.is_main()
        self.loggers: Loggers | None = None
        self.warned = False

    def __enter__(self) -> Watch:
        if self.main:
            self.loggers = Loggers(self.run, self.spec, self.resume_step)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.loggers is not None:
            self.loggers.close(ok=kind is None)
            self.loggers = None

    def record(self, record: dict[str, Any]) -> None:
        if self.main:
            runs.append_metrics(self.run, record)
            if self.loggers is not None:
                self.loggers.log(record)

    def epoch_end(self) -> None:
        if not self.main:
            return
        try:
            curves.draw(self.run)
        except OSError as error:
            if not self.warned:
                print(f"warning: could not write {self.run / curves.NAME} ({error}); training goes on",
                      file=sys.stderr)  # fmt: skip
                self.warned = True
