"""The paper's linear probe (§2.4) on frozen features: multinomial logistic regression with L-BFGS.

Trial t uses seed base + t. It carves a stratified 10 % validation split from train, standardises
features with the mean and std of the remaining train part, and fits
`LogisticRegression(solver="lbfgs")` for each C = 1/wd, wd ∈ logspace(−6, 5, 10) (the paper's
grid). The fits run along the regularisation path, from the strongest (C = 1e−5) to the weakest
(C = 1e6), each warm-started from the last, as the paper's `warm_start=True` does. The C with the
best validation accuracy wins (ties → the stronger regularisation). Its model, fitted on the train
part, is the final model: the paper refits on the train split only, which is that fit. It is
scored once on test. Test labels enter nothing but that score.

Trials are independent, so they run in threads, one per core (each fit at one BLAS thread; NumPy
and the loss release the GIL): the same numbers as one after another, 1.6–1.7× faster on two
cores at the CIFAR study's probe size (benchmarks/probe_speed.py).

Dimensions: N train, M test, F feature dimension, C classes.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from torch import Tensor

from affssl.eval.splits import holdout
from affssl.stats import t_interval

WEIGHT_DECAYS = np.logspace(-6, 5, 10)  # paper: torch.logspace(-6, 5, 10)
C_GRID: tuple[float, ...] = tuple(sorted(float(c) for c in 1.0 / WEIGHT_DECAYS))  # strongest first
VAL_FRAC = 0.1
MAX_ITER = 1000  # the paper keeps sklearn's 100, which stops short of convergence at large C


@dataclass
class Trial:
    seed: int
    C: float
    val_acc_pct: list[float]  # one per C_GRID entry
    test_acc_pct: float
    n_train: int
    n_val: int
    not_converged: int  # fits along the path that hit max_iter
    model: LogisticRegression = field(repr=False)
    mean: np.ndarray = field(repr=False)  # (F,) standardisation fitted on the train part
    std: np.ndarray = field(repr=False)  # (F,)

    def summary(self) -> dict:
        keys = ("seed", "C", "val_acc_pct", "test_acc_pct", "n_train", "n_val", "not_converged")
        return {k: getattr(self, k) for k in keys}


@dataclass
class LinearResult:
    trials: list[Trial]
    mean_pct: float
    ci95_pct: float | None  # half-width of the 95 % t-interval over trials

    def summary(self) -> dict:
        return {
            "top1_pct": self.mean_pct,
            "ci95_pct": self.ci95_pct,
            "C_grid": list(C_GRID),
            "trials": [t.summary() for t in self.trials],
        }


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean) / std


_fits = threading.local()  # per thread: did its current fit warn that it did not converge?


class _FitSettings:
    """Process-wide settings for fits, held while any `fitting()` block is open, in any thread.

    One BLAS thread: once torch's OpenMP pool exists, multi-threaded OpenBLAS spins against it;
    measured 40–60× slower per L-BFGS iteration on a 2-core machine (digits features, 1,294 × 128).
    Warnings: `warnings.catch_warnings` swaps process-wide state, so threads cannot each hold their
    own (before Python 3.14). The first block to open sets up one hook that marks a
    ConvergenceWarning on the thread that raised it (others pass through); the last to close
    restores the process's settings.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blocks = 0
        self.undo = ExitStack()

    def open(self) -> None:
        with self.lock:
            if self.blocks == 0:
                self.undo = ExitStack()
                self.undo.enter_context(threadpool_limits(limits=1, user_api="blas"))
                self.undo.enter_context(warnings.catch_warnings())
                warnings.simplefilter("always", ConvergenceWarning)
                warnings.showwarning = _marking(warnings.showwarning)
            self.blocks += 1

    def close(self) -> None:
        with self.lock:
            self.blocks -= 1
            if self.blocks == 0:
                self.undo.close()


def _marking(show: Callable[..., None]) -> Callable[..., None]:
    def hook(message, category, *where) -> None:  # warnings.showwarning's arguments
        if issubclass(category, ConvergenceWarning):
            _fits.warned = True
        else:
            show(message, category, *where)

    return hook


_SETTINGS = _FitSettings()


@contextmanager
def fitting() -> Iterator[None]:
    """Where fits run (see _FitSettings); blocks nest and may be open in several threads at once."""
    _SETTINGS.open()
    try:
        yield
    finally:
        _SETTINGS.close()


def fit_path(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, max_iter: int = MAX_ITER
) -> tuple[list[LogisticRegression], list[float], int]:
    """One model per C in C_GRID (warm-started along the path), its validation accuracy in %, and
    how many fits did not converge. Call it inside `fitting()`."""
    clf = LogisticRegression(solver="lbfgs", max_iter=max_iter, warm_start=True)
    models, val_acc, not_converged = [], [], 0
    for c in C_GRID:
        _fits.warned = False
        clf.set_params(C=c).fit(x_train, y_train)
        not_converged += _fits.warned
        models.append(copy.deepcopy(clf))
        val_acc.append(100.0 * float(np.mean(clf.predict(x_val) == y_val)))
    return models, val_acc, not_converged


def trial(
    h_train: Tensor, y_train: Tensor, h_test: Tensor, y_test: Tensor, seed: int, max_iter: int = MAX_ITER
) -> Trial:
    """One trial: validation split from `seed`, C chosen on it, the chosen model scored on test."""
    x, y = h_train.double().numpy(), y_train.numpy()  # (N, F), (N,)
    keep, val = (i.numpy() for i in holdout(y_train, len(y), VAL_FRAC, seed))
    mean, std = x[keep].mean(0), x[keep].std(0).clip(min=1e-6)  # (F,) each; dead ReLU units have std 0
    x = standardise(x, mean, std)
    with fitting():
        models, val_acc, not_converged = fit_path(x[keep], y[keep], x[val], y[val], max_iter)
    best = int(np.argmax(val_acc))  # first maximum: the strongest regularisation among ties
    model = models[best]
    x_test = standardise(h_test.double().numpy(), mean, std)  # (M, F)
    test_acc = 100.0 * float(np.mean(model.predict(x_test) == y_test.numpy()))  # the only use of test labels
    return Trial(seed, C_GRID[best], val_acc, test_acc, len(keep), len(val), not_converged, model, mean, std)


def linear_probe(
    h_train: Tensor,
    y_train: Tensor,
    h_test: Tensor,
    y_test: Tensor,
    trials: int = 5,
    seed: int = 0,
    max_iter: int = MAX_ITER,
    workers: int | None = None,
) -> LinearResult:
    """`trials` trials with seeds seed, seed+1, …: top-1 accuracy in %, mean ± 95 % CI half-width.

    `workers` threads run the trials (default: torch's intra-op thread count, at most `trials`);
    the result does not depend on it.
    """
    if trials < 1:
        raise ValueError(f"trials must be ≥ 1, got {trials}")

    def one(t: int) -> Trial:
        return trial(h_train, y_train, h_test, y_test, seed + t, max_iter)

    with fitting(), ThreadPoolExecutor(max_workers=min(trials, workers or torch.get_num_threads())) as pool:
        done = list(pool.map(one, range(trials)))
    mean, ci = t_interval([t.test_acc_pct for t in done])
    return LinearResult(done, mean, ci)
