"""Weighted cosine k-nearest-neighbour classification on frozen features (Wu et al. 2018; DINO's eval_knn).

Each test feature votes with its k most similar train features: cosine similarity s, weight
exp(s / T), weights summed per class, the class with the largest sum wins (ties → the lower class
index). k = 20 and 200 with T = 0.1, as the peers report. No hyper-parameter is tuned, so the test
split is scored directly. A pure function of tensors.

Dimensions: N train, M test, F feature dimension, C classes, K the largest k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

KS: tuple[int, ...] = (20, 200)
TEMPERATURE = 0.1


def knn_predict(
    h_train: Tensor,
    y_train: Tensor,
    h_test: Tensor,
    ks: Sequence[int] = KS,
    temperature: float = TEMPERATURE,
    n_classes: int | None = None,
    chunk: int = 1024,
) -> dict[int, Tensor]:
    """Predicted labels (M,) per k; k larger than N uses all N neighbours."""
    n_classes = n_classes or int(y_train.max()) + 1
    train = F.normalize(h_train.float(), dim=1)  # (N, F)
    k_max = min(max(ks), len(train))
    preds: dict[int, list[Tensor]] = {k: [] for k in ks}
    for start in range(0, len(h_test), chunk):
        test = F.normalize(h_test[start : start + chunk].float(), dim=1)  # (m, F)
        sim, idx = (test @ train.T).topk(k_max, dim=1)  # (m, K) each, most similar first
        weight = (sim / temperature).exp()  # (m, K)
        votes = F.one_hot(y_train[idx], n_classes).float() * weight[..., None]  # (m, K, C)
        for k in ks:
            preds[k].append(votes[:, : min(k, k_max)].sum(1).argmax(1))  # (m,)
    return {k: torch.cat(p) for k, p in preds.items()}


def knn_accuracy(
    h_train: Tensor,
    y_train: Tensor,
    h_test: Tensor,
    y_test: Tensor,
    ks: Sequence[int] = KS,
    temperature: float = TEMPERATURE,
) -> dict[int, float]:
    """Top-1 accuracy in % per k."""
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    preds = knn_predict(h_train, y_train, h_test, ks, temperature, n_classes)
    return {k: 100.0 * float((p == y_test).float().mean()) for k, p in preds.items()}
