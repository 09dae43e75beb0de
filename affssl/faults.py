"""How a run stops early without losing work: the divergence guard and the preemption signals.

Divergence: a loss that is not finite (or above `train.max_loss`) ends the run with one line
(`Diverged`, exit code 2). The engine checks before the backward pass, so the optimizer never
steps on that loss, and it saves nothing afterwards: RUN/last.safetensors keeps the last finite
state.

Preemption: SIGTERM, SIGINT and SIGUSR1 only set a flag. The engine finishes the step it is on,
writes a step checkpoint and raises `Preempted`, whose exit code is 128 + the signal number
(143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1), as a shell reports a process the signal
killed. A second SIGINT interrupts at once; the checkpoint on disk is intact either way.
"""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path

import torch
from torch import Tensor

from affssl import runs
from affssl.errors import UserError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Diverged(UserError):
    """The loss (or the weights) stopped being finite, or the loss passed train.max_loss."""


class Preempted(UserError):
    """A stop signal arrived; a step checkpoint was written and the run can be resumed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """Within `with`: record the first stop signal instead of dying; the previous handlers return on exit.

    Handlers can only be installed from the main thread; elsewhere (a run started from a worker
    thread) the signals keep their previous meaning.
    """

    def __init__(self) -> None:
        self.signum = 0  # 0: none yet
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = self.signum or signum


class DivergenceGuard:
    """Watches every step's loss on the device; `seen` is a float flag (0/1) that only ever rises.

    `observe` is a few device ops and never waits for the device, so the engine chooses when to
    read the flag: on CPU every step (reading a CPU tensor costs nothing), on CUDA at the steps
    it syncs anyway (log lines, checkpoints), since a per-step read would stall the kernel queue.
    Between two reads on CUDA, a fused optimizer skips its updates once the flag is up (`protect`:
    the `found_inf` input GradScaler uses), so the weights stay those of the last finite step.
    """

    def __init__(self, max_loss: float | None, device: torch.device, precision: str = "fp32"):
        self.max_loss = math.inf if max_loss is None else max_loss
        self.precision = precision  # the run's policy name, for the line's advice
        self.seen = torch.zeros((), device=device)  # 1.0 once a bad loss was observed
        self.step = torch.full((), -1, dtype=torch.int64, device=device)  # the first bad step
        self.values: Tensor | None = None  # (K,) the loss terms at that step
        self.names: tuple[str, ...] = ()
        self.first: Tensor | None = None  # () the first loss observed
        self.first_step = -1  # the step of that first loss
        self.last: Tensor | None = None  # () the last loss observed before the first bad one

    def observe(self, step: int, parts: dict[str, Tensor]) -> None:
        values = torch.stack([v.detach().float() for v in parts.values()])  # (K,)
        loss = parts["loss"].detach().float()
        bad = ~torch.isfinite(loss) | (loss > self.max_loss)
        first = bad & (self.seen == 0)
        self.step = torch.where(first, step, self.step)
        self.values = values if self.values is None else torch.where(first, values, self.values)
        self.names = tuple(parts)
        if self.first is None:
            self.first, self.first_step = loss, step
        self.last = loss if self.last is None else torch.where(bad | (self.seen > 0), self.last, loss)
        torch.maximum(self.seen, bad.float(), out=self.seen)  # in place: `protect` holds this tensor

    def protect(self, optimizer: torch.optim.Optimizer) -> None:
        """Make a fused optimizer skip its step while the flag is up (other optimizers cannot)."""
        if optimizer.defaults.get("fused"):
            optimizer.found_inf = self.seen

    def error(self, lr: float) -> Diverged:
        """The one line for the first bad step seen here (another process may have seen it instead)."""
        if self.values is None or int(self.step) < 0:
            return Diverged(f"the loss diverged in another process; nothing after the last finite step was "
                            f"saved; {self.fix(lr)}")  # fmt: skip
        values = dict(zip(self.names, self.values.tolist(), strict=True))
        terms = ", ".join(f"{n} {v:.4g}" for n, v in values.items())
        what = "is not finite" if not math.isfinite(values["loss"]) else f"passed train.max_loss {self.max_loss:g}"
        fix = self.fix(lr, passed=math.isfinite(values["loss"]))
        return Diverged(f"the loss {what} at step {int(self.step) + 1} ({terms}{culprit(values)}); nothing after "
                        f"the last finite step was saved; {fix}")  # fmt: skip

    def fix(self, lr: float, passed: bool = False) -> str:
        """What to do: lower the lr when the loss grew before the fault (or passed max_loss), else look elsewhere.

        A learning rate too high shows as a loss that climbs over the steps before it breaks; a loss that
        held steady and then broke in one step points at a numeric fault (a kernel, bf16 range, the data).
        """
        retry = "rerun with --set train.precision=fp32, " if self.precision == "bf16" else ""
        if self.first is None or self.last is None:  # no loss seen in this process
            return (f"lower optim.lr (now {lr:g}) if the loss was growing, else look for a numeric fault ({retry}"
                    "check the data for non-finite pixels); start a new run")  # fmt: skip
        first, last = float(self.first), float(self.last)
        bad_step = int(self.step)
        if 0 <= bad_step - self.first_step <= 1:  # no history to read a trend from: say what there is
            before = "it was the first step" if bad_step == self.first_step else \
                f"the one step before it had loss {last:.6g}"  # fmt: skip
            if passed:
                return f"{before}; lower optim.lr (now {lr:g}) and start a new run"
            return (f"{before}; lower optim.lr (now {lr:g}) if it is high, else look for a numeric fault ({retry}"
                    "check the data for non-finite pixels); start a new run")  # fmt: skip
        if math.isfinite(last) and last > 1.5 * abs(first) + 1e-3:
            return f"the loss rose from {first:.4g} to {last:.4g} before it; lower optim.lr (now {lr:g}) and start " \
                "a new run"  # fmt: skip
        if passed:
            return (f"the loss jumped there in one step (from {last:.6g}; {first:.6g} at first); lower optim.lr "
                    f"(now {lr:g}) and start a new run")  # fmt: skip
        return (
            f"the loss held steady before it ({first:.4g} → {last:.4g}), so the lr (now {lr:g}) is an unlikely "
            f"cause: look for a numeric fault ({retry}check the data for non-finite pixels) and start a new run"
        )


def culprit(values: dict[str, float]) -> str:
    """'; loss_affine is the term that broke' when the loss has terms and one of them is not finite or dominates."""
    terms = {k: v for k, v in values.items() if k != "loss"}
    if len(terms) < 2:
        return ""
    bad = [k for k, v in terms.items() if not math.isfinite(v)]
    top = max(terms, key=lambda k: abs(terms[k]))
    others = sum(abs(v) for k, v in terms.items() if k != top)
    if bad or abs(terms[top]) > 100 * max(others, 1.0):
        return f"; {bad[0] if bad else top} is the term that broke"
    return ""


def preempted(signum: int, run: Path, step: int, epoch: int) -> Preempted:
    """The one line after a stop signal: where the run is and how to go on."""
    return Preempted(f"stopped by {signal.Signals(signum).name} after step {step} (epoch {epoch}); "
                     f"{run / runs.LAST} holds that state; continue with `affssl pretrain --resume --out {run}`",
                     signum)  # fmt: skip
