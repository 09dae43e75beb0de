"""`affssl eval embed`: a 2-D map of the test features, coloured by class, as a PNG.

The features are the probes' own (frozen, eval mode, the run's precision, cached per checkpoint
hash and data). Up to `points` test images are drawn (a seeded subset), their features scaled to
unit length (the cosine geometry the kNN probe and the SSL losses use) and laid out in 2-D by
t-SNE (scikit-learn) or, when umap-learn is installed (`pip install "affssl[umap]"`), UMAP.
The map is a picture to look at, not a score: distances between clusters in t-SNE mean little.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from affssl import atomic
from affssl.data import Dataset
from affssl.errors import UserError
from affssl.eval.session import Session

METHODS = ("auto", "tsne", "umap")
POINTS = 2000  # default number of test images on the map (t-SNE's time grows with it)
FIG_IN, DPI = (8.0, 6.5), 100  # the PNG is 800 × 650 px


def resolve_method(method: str) -> str:
    """auto → umap when umap-learn is installed, else tsne; umap without it is a one-line error."""
    if method not in METHODS:
        raise UserError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    has_umap = importlib.util.find_spec("umap") is not None
    if method == "umap" and not has_umap:
        raise UserError("--method umap needs umap-learn (the optional extra 'umap'): pip install umap-learn")
    return ("umap" if has_umap else "tsne") if method == "auto" else method


def layout(h: Tensor, method: str, seed: int) -> np.ndarray:
    """Features (n, F) → 2-D coordinates (n, 2), float32; seeded, so the same call draws the same map."""
    x = torch.nn.functional.normalize(h.float(), dim=1).numpy()  # (n, F) unit length
    n = x.shape[0]
    if n < 3:
        raise UserError(f"a map needs at least 3 test images, the data set has {n}")
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
        return reducer.fit_transform(x).astype(np.float32)
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    return tsne.fit_transform(x).astype(np.float32)


def draw(xy: np.ndarray, labels: Tensor | None, classes: tuple[str, ...], title: str, path: Path) -> Path:
    """Scatter the map, one colour per class with a legend (one colour when unlabelled); written atomically."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_IN, dpi=DPI)
    ax = fig.add_axes((0.04, 0.05, 0.72, 0.88))
    s = marker_area(len(xy))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=s, color="C0", linewidths=0)
    else:
        for c in labels.unique().tolist():
            mask = (labels == c).numpy()
            colour = _colour(c, len(classes))
            name = classes[c] if c < len(classes) else str(c)
            ax.scatter(xy[mask, 0], xy[mask, 1], s=s, color=colour, linewidths=0, label=name)
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, markerscale=max(1.0, 12 / s),
                           frameon=False)  # fmt: skip
        legend.set_title("class", prop={"size": 8})
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return atomic.write_png(fig, path, DPI)


def marker_area(n: int) -> float:
    """A marker's area in points² for n points: the same ink in all (~40 on a 2,000-point map, 4 pt² each), so a
    100-point map's dots are visible (36 pt², 8 px across) and a dense map's do not merge, within 4–36 pt²."""
    return min(36.0, max(4.0, 8000 / max(n, 1)))


def _colour(c: int, n_classes: int) -> tuple[float, ...]:
    """tab10 / tab20 for up to 20 classes, then evenly spaced hues."""
    from matplotlib import colormaps

    if n_classes <= 20:
        return colormaps["tab10" if n_classes <= 10 else "tab20"](c % 20)
    return colormaps["hsv"](c / n_classes)


def evaluate_embed(
    ckpt: str | Path,
    *,
    dataset: str | None = None,
    out: str | Path | None = None,
    method: str = "auto",
    points: int = POINTS,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 256,
    cache: bool = True,
    progress: bool = False,
    data: Dataset | None = None,
) -> dict:
    """Map up to `points` test images into `out` (default RUN/eval/embed-<dataset>.png); returns the record."""
    method = resolve_method(method)
    if points < 3:
        raise UserError(f"--points must be at least 3, got {points}")
    run = Session(ckpt, dataset, seed, None, device, batch_size, cache, progress, data, need_labels=False)
    (h,) = run.frozen_features("test")  # (N, F)
    labels = run.data.test.labels
    n = min(points, h.shape[0])
    keep = torch.randperm(h.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values  # (n,)
    with run.timed("layout"):
        xy = layout(h[keep], method, seed)  # (n, 2)
    path = Path(out) if out is not None else run.source.eval_dir / f"embed-{run.data.tag}.png"
    if path.suffix.lower() != ".png":
        raise UserError(f"--out {path} must name a .png file")
    epoch = run.source.header.get("epoch", "?")
    title = (f"{run.source.path.name} (epoch {epoch}): {run.data.dataset} test features, {n} images, "
             f"{'t-SNE' if method == 'tsne' else 'UMAP'}")  # fmt: skip
    draw(xy, None if labels is None else labels[keep], run.data.classes, title, path)
    result = {"png": str(path), "method": method, "points": n, "normalised": True}
    return run.finish("embed", result, seeds=[seed])
