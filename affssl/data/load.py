"""`load_dataset`: a DataSpec → a Dataset of uint8 splits in memory (design decision 1).

The source (affssl.data.sources) is decoded once and kept in the tensor cache (affssl.data.cache),
memory-mapped; `--limit` is applied after the cache, stratified and seeded (a copy of the subset
only). Randomness takes explicit Generators.
"""

from __future__ import annotations

from affssl.data import fingerprint
from affssl.data.batches import subset
from affssl.data.cache import cache_dir, through_cache
from affssl.data.dataset import Dataset, check_bad
from affssl.data.sources import plan
from affssl.spec import DataSpec


def load_dataset(spec: DataSpec, seed: int = 0, progress: bool = False) -> Dataset:
    """Load, resize to spec.image_size_px, apply spec.limit to train (stratified, seeded by `seed`).

    Unreadable images of a folder are left out while within spec.max_bad_frac (those in spec.bad_first, which a run
    recorded, not counted); the Dataset lists them."""
    source, identify, build = plan(spec, cache_dir(spec), progress)
    train, test, classes, skipped = through_cache(spec, source, identify, build) if spec.cache else build()
    seen = fingerprint.of([source, identify()], len(train.images))  # the source, before the limit
    total = len(train.images) + (0 if test is None else len(test.images)) + len(skipped)
    check_bad(skipped, total, spec.max_bad_frac, spec.bad_first)  # the cache may hold a set decoded under another limit
    if spec.limit is not None:
        train = subset(train, spec.limit, seed)
    return Dataset(name=spec.dataset, train=train, test=test, classes=classes, skipped=skipped, fingerprint=seen)
