"""What a run shows while it trains, written by rank 0: metrics.jsonl, the loggers and RUN/curves.png.

The engine hands every record to `Watch.record` (appended to metrics.jsonl, then sent to the
loggers of train.loggers) and calls `Watch.epoch_end` after each epoch's record: curves.png is
redrawn from metrics.jsonl at the last epoch, and before it whenever the time since the last drawing
(or since the run started) is at least DRAW_EVERY_COST times what that drawing took, the first one
counted at FIRST_DRAW_S (importing matplotlib and drawing: 0.7–1.1 s on a 2-core machine, 0.25 s a
drawing after it). So drawing stays within about 5 % of a run's time: a run whose epochs take a
minute is drawn at every epoch, one of 8 two-second epochs (the default run) once, at its end.
A run that stops early is drawn once more on exit.
Other ranks' Watch does nothing. Used as a context manager: the
loggers open on entry (a failure there stops the run before its first step) and close on exit,
marked failed when the run ends in an exception. A picture that cannot be written warns once and
the run goes on (design rule 17: watching never changes training).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from affssl import curves, distributed, runs
from affssl.loggers import Loggers
from affssl.spec import RunSpec

DRAW_EVERY_COST = 20.0
FIRST_DRAW_S = 1.0


class Watch:
    def __init__(self, run: Path, spec: RunSpec, resume_step: int | None = None):
        self.run, self.spec, self.resume_step = run, spec, resume_step
        self.main = distributed.is_main()
        self.loggers: Loggers | None = None
        self.warned = False
        self.drawn_at = time.perf_counter()  # the run's start counts as a drawing of the first one's cost
        self.draw_cost_s = FIRST_DRAW_S
        self.undrawn = False  # an epoch record that curves.png does not show yet

    def __enter__(self) -> Watch:
        if self.main:
            self.loggers = Loggers(self.run, self.spec, self.resume_step)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.undrawn:
            self.draw()
        if self.loggers is not None:
            self.loggers.close(ok=kind is None)
            self.loggers = None

    def record(self, record: dict[str, Any]) -> None:
        if self.main:
            runs.append_metrics(self.run, record)
            if self.loggers is not None:
                self.loggers.log(record)

    def epoch_end(self, final: bool = False) -> None:
        if not self.main:
            return
        self.undrawn = True
        if final or time.perf_counter() - self.drawn_at >= DRAW_EVERY_COST * self.draw_cost_s:
            self.draw()

    def draw(self) -> None:
        t0 = time.perf_counter()
        self.undrawn = False
        try:
            curves.draw(self.run)
        except OSError as error:
            if not self.warned:
                print(f"warning: could not write {self.run / curves.NAME} ({error}); training goes on",
                      file=sys.stderr)  # fmt: skip
                self.warned = True
        self.drawn_at = time.perf_counter()
        self.draw_cost_s = self.drawn_at - t0
