"""RUN/curves.png: a run's curves drawn from its metrics.jsonl, redrawn as epochs end (affssl.watch says when).

Six panels: the loss terms, the learning rate and img/s per logged step; the online monitor's kNN
top-1 and the affine head's R² per component per epoch (affssl.monitor); the seconds an epoch's
training and its monitor took. Drawn with matplotlib's Agg canvas (no display, no pyplot state) at
a fixed size (SIZE_IN × DPI: 1200 × 650 px), written to a temp file and renamed into place, so a
viewer never sees half a picture. Reads only the records: drawing never changes training.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from affssl import runs

NAME = "curves.png"
SIZE_IN = (12.0, 6.5)
DPI = 100
LOSS_TERMS = ("loss", "loss_ssl", "loss_affine", "loss_augself", "loss_rotation", "loss_care")  # those a run logs


def series(records: list[dict[str, Any]], kind: str, field: str, x: str = "step") -> tuple[list, list]:
    """(x values, field values) of the records of one kind that hold the field."""
    rows = [(r[x], r[field]) for r in records if r.get("kind") == kind and field in r and x in r]
    return [a for a, _ in rows], [b for _, b in rows]


def draw(run: Path) -> Path:
    """Draw RUN/curves.png from RUN/metrics.jsonl; returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = runs.read_metrics(run)
    fig = Figure(figsize=SIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    margins = {"left": 0.06, "right": 0.98, "bottom": 0.08, "top": 0.9, "wspace": 0.28, "hspace": 0.42}
    ax = fig.subplots(2, 3, gridspec_kw=margins).ravel()  # fixed margins: no layout pass, one draw
    for term in LOSS_TERMS:
        if term in ("loss", "loss_ssl", "loss_affine") or any(term in r for r in records):  # objectives that ran
            ax[0].plot(*series(records, "step", term), label=term)
    _finish(ax[0], "loss (epoch running mean)", "step", legend=True)
    ax[1].plot(*series(records, "step", "lr"))
    _finish(ax[1], "learning rate", "step")
    ax[2].plot(*series(records, "step", "img_per_s"))
    _finish(ax[2], "img/s", "step")
    ax[3].plot(*series(records, "epoch", "monitor_knn_top1", "epoch"), marker="o")
    _finish(ax[3], "monitor: kNN top-1 (%)", "epoch")
    fields = sorted({k for r in records if r.get("kind") == "epoch" for k in r if k.startswith("monitor_r2_")})
    batch = [f for f in fields if f.startswith("monitor_r2_batch_")]  # the head as trained: solid
    for i, field in enumerate(batch):
        ax[4].plot(*series(records, "epoch", field, "epoch"), marker="o", color=f"C{i}",
                   label=field.removeprefix("monitor_r2_batch_"))  # fmt: skip
    for i, field in enumerate(f for f in fields if f not in batch):  # eval mode: dashed, the same colour
        ax[4].plot(*series(records, "epoch", field, "epoch"), marker=".", linestyle="--", color=f"C{i}",
                   label=field.removeprefix("monitor_r2_") + (" (eval mode)" if batch else ""))  # fmt: skip
    title = (
        "monitor: affine head R² (dashed: eval mode; below −1 cut)"
        if batch
        else "monitor: affine head R² (below −1 cut)"
    )
    _finish(ax[4], title, "epoch", legend=bool(fields))
    if fields:
        ax[4].set_ylim(max(-1.0, ax[4].get_ylim()[0]), 1.0)
    for field, label in (("epoch_time_s", "training"), ("monitor_time_s", "monitor")):
        ax[5].plot(*series(records, "epoch", field, "epoch"), marker="o", label=label)
    _finish(ax[5], "seconds per epoch", "epoch", legend=True)
    fig.suptitle(run.name)
    return _save(fig, run / NAME)


def _finish(ax, title: str, xlabel: str, legend: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not ax.has_data():
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
    elif legend:
        ax.legend(fontsize=8)


def _save(fig, path: Path) -> Path:
    """Write the figure beside `path` and rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
