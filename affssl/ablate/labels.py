"""Unlabelled data in an ablation: the probes that need class labels are skipped, said in one line.

The linear and kNN probes (and the linear curve) need class labels; the equivariance probe and profile
(`affine`, `equivariance`) do not. When every data set the runs are probed on is an unlabelled folder, those
probes leave the plan and the runs pretrain (and take the affine probe when asked for); a mix of
labelled and unlabelled probe data sets is refused in one line instead.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from affssl.ablate.planning import EvalSettings
from affssl.errors import UserError

NEED_LABELS = ("linear", "knn")


def label_free(settings: EvalSettings, dataset: str) -> tuple[EvalSettings, str | None]:
    """(settings without the label probes, the line saying so) when the probe data is unlabelled, else (settings, None).

    `dataset`: the pretraining data set, probed where settings.datasets holds None.
    """
    from affssl.data.sources import labelled  # imports torch: not for `ablate --dry-run`

    needy = [p for p in settings.protocols if p in NEED_LABELS]
    names = [d or dataset for d in settings.datasets]
    unlabelled = [d for d in names if Path(d).expanduser().is_dir() and not labelled(d)]
    if not needy or not unlabelled:
        return settings, None
    if len(unlabelled) < len(names):
        raise UserError(f"--eval-dataset {unlabelled[0]} is unlabelled and the {needy[0]} probe needs class labels; "
                        "probe it in an ablation of its own, or with --eval affine only")  # fmt: skip
    kept = tuple(p for p in settings.protocols if p not in NEED_LABELS)
    rest = "" if kept else "; the runs only pretrain (--eval affine probes equivariance without labels)"
    line = f"data set {unlabelled[0]} is unlabelled: the {' and '.join(needy)} probe(s) need labels, skipped{rest}"
    return replace(settings, protocols=kept, curve=False, curve_points=None), line
