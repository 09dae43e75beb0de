"""How the affine head of a run scores on held-out images, three ways (pilots.md, "Scoring the head").

    python results/cifar10-cpu-objectives/head_scoring.py RUN/last.safetensors data/cifar10

On the first 2,000 test images, R² per component of the head's own target encoding, for pairs drawn
(a) as training draws them (the run's view pipeline, then φ) with the encoder in train mode: each set
(views, warped views) normalised by its own batch statistics, as in every training step; (b) the same
pairs with the encoder in eval mode (BatchNorm running statistics); (c) clean images, eval mode, as
the online monitor and `eval equivariance` score the head. The head always uses batch statistics.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import r2_score

from affssl import affine, augment
from affssl.data import load_dataset
from affssl.eval.features import open_source
from affssl.eval.session import load_learner

COMPONENT_COLUMNS = {"rotation": [0], "translation": [1, 2], "scale": [3], "shear": [4, 5]}


def main() -> None:
    source = open_source(Path(sys.argv[1]))
    learner, spec = load_learner(source), source.spec
    data = load_dataset(spec.data.model_copy(update={"dataset": sys.argv[2], "limit": None}), seed=0)
    x = data.test.images[:2000]  # (N, C, S, S) uint8
    size_px, aff = spec.data.image_size_px, spec.affine

    def score(train_mode: bool, augmented: bool) -> dict[str, float]:
        gen = torch.Generator().manual_seed(7)  # the same draws for every scoring
        learner.backbone.train(train_mode)
        learner.head.train()
        preds, targets = [], []
        with torch.no_grad():
            for i in range(0, len(x), 250):
                xb = x[i : i + 250]  # (b, C, S, S)
                v = augment.views(xb, spec.augment, gen)[0] if augmented else xb.float().div(255)
                phi = affine.sample(v.shape[0], aff, size_px, gen)  # (b, 6)
                h, h_warped = learner.backbone(v), learner.backbone(affine.warp(v, phi, aff))  # (b, F) each
                preds.append(learner.head.predict(affine.aggregate(h, h_warped, aff.aggregation)).float())
                targets.append(affine.targets(phi, aff, size_px))
        cols = r2_score(torch.cat(targets).numpy(), torch.cat(preds).numpy(), multioutput="raw_values")
        return {name: round(float(np.mean(cols[c])), 2) for name, c in COMPONENT_COLUMNS.items()}

    print("(a) training's pairs, encoder in train mode:", score(True, True))
    print("(b) training's pairs, encoder in eval mode: ", score(False, True))
    print("(c) clean images, encoder in eval mode:     ", score(False, False))


if __name__ == "__main__":
    main()
