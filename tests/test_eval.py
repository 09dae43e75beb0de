"""affssl.eval: oracles for the CI, kNN and the probes; selection never reads test labels; the feature cache."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import r2_score

from affssl import affine
from affssl.data import DataError, Dataset, Split
from affssl.eval import evaluate_affine, evaluate_knn, evaluate_linear, features, linear
from affssl.eval.equivariance import head_r2, probe, probe_spec, r2_columns, sample_phi
from affssl.eval.knn import knn_accuracy, knn_predict
from affssl.eval.splits import holdout, load_eval_data
from affssl.spec import AffineSpec
from affssl.stats import t_interval


def _blobs(n: int, n_classes: int = 3, dim: int = 8, seed: int = 0, spread: float = 1.0):
    """Gaussian class blobs: (n, dim) float32 features and (n,) int64 labels."""
    gen = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(99))
    y = torch.arange(n) % n_classes
    return centres[y] + spread * torch.randn(n, dim, generator=gen), y


def _images(n: int, size: int = 16, n_classes: int = 4, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    return Split(
        torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8), torch.arange(n) % n_classes
    )


def _dataset(n_train: int = 80, n_test: int = 40, test: bool = True, labelled: bool = True) -> Dataset:
    train, held = _images(n_train, seed=0), _images(n_test, seed=1)
    if not labelled:
        train, held = Split(train.images, None), Split(held.images, None)
    return Dataset("synthetic", train, held if test else None, tuple("abcd") if labelled else ())


# ---------------------------------------------------------------------------------------------
# Statistics


def test_t_interval_matches_scipy():
    values = [55.10, 54.93, 55.31, 55.02, 55.14]
    mean, half = t_interval(values)
    lo, hi = stats.t.interval(0.95, df=4, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values), abs=1e-12)
    assert half == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert half == pytest.approx(2.7764451051977987 * np.std(values, ddof=1) / math.sqrt(5), rel=1e-12)
    assert t_interval([61.0]) == (61.0, None)


# ---------------------------------------------------------------------------------------------
# kNN


def _knn_naive(h_train, y_train, h_test, k, temperature, n_classes):
    """One test point at a time with Python loops: cosine similarity, top k, exp(s/T) votes."""
    out = []
    for q in h_test.tolist():
        sims = []
        for i, x in enumerate(h_train.tolist()):
            dot = sum(a * b for a, b in zip(q, x, strict=True))
            sims.append((dot / (math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in x))), i))
        sims.sort(key=lambda p: -p[0])
        scores = [0.0] * n_classes
        for s, i in sims[:k]:
            scores[int(y_train[i])] += math.exp(s / temperature)
        out.append(max(range(n_classes), key=lambda c: (scores[c], -c)))  # ties → lower class
    return torch.tensor(out)


@pytest.mark.parametrize("k", [1, 5, 20, 200])
def test_knn_matches_naive_reference(k):
    h_train, y_train = _blobs(60, n_classes=4, dim=6, spread=3.0)
    h_test, _ = _blobs(25, n_classes=4, dim=6, seed=1, spread=3.0)
    got = knn_predict(h_train, y_train, h_test, ks=(k,), temperature=0.1, n_classes=4, chunk=7)[k]
    assert torch.equal(got, _knn_naive(h_train, y_train, h_test, min(k, 60), 0.1, 4))


def test_knn_accuracy_on_separable_data():
    h_train, y_train = _blobs(90, spread=0.3)
    h_test, y_test = _blobs(30, seed=1, spread=0.3)
    assert knn_accuracy(h_train, y_train, h_test, y_test) == {20: 100.0, 200: 100.0}


# ---------------------------------------------------------------------------------------------
# Linear probe


def test_linear_selection_never_reads_test_labels():
    h_train, y_train = _blobs(150, spread=2.0)
    h_test, y_test = _blobs(60, seed=1, spread=2.0)
    garbage = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(5))
    a = linear.trial(h_train, y_train, h_test, y_test, seed=3)
    b = linear.trial(h_train, y_train, h_test, garbage, seed=3)
    assert a.C == b.C and a.val_acc_pct == b.val_acc_pct
    assert np.array_equal(a.model.coef_, b.model.coef_) and np.array_equal(a.model.intercept_, b.model.intercept_)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.std, b.std)
    assert a.test_acc_pct != b.test_acc_pct  # only the score moves


def test_linear_trials_use_distinct_seeds_and_the_paper_grid():
    h_train, y_train = _blobs(120, spread=1.5)
    h_test, y_test = _blobs(60, seed=1, spread=1.5)
    result = linear.linear_probe(h_train, y_train, h_test, y_test, trials=3, seed=7)
    assert [t.seed for t in result.trials] == [7, 8, 9]
    vals = [set(holdout(y_train, 120, linear.VAL_FRAC, s)[1].tolist()) for s in (7, 8, 9)]
    assert vals[0] != vals[1] and vals[1] != vals[2] and vals[0] != vals[2]
    assert all(t.n_val == 12 and t.n_train == 108 for t in result.trials)
    assert np.allclose(sorted(1 / np.array(linear.C_GRID)), np.logspace(-6, 5, 10))
    mean, ci = t_interval([t.test_acc_pct for t in result.trials])
    assert (result.mean_pct, result.ci95_pct) == (mean, ci)
    assert result.mean_pct > 90


def _sequential_reference(h_train, y_train, h_test, y_test, seed, max_iter):
    """The probe as it ran before threads: one trial after another, warnings caught per fit."""
    import copy
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    out = []
    for t in range(3):
        x, y = h_train.double().numpy(), y_train.numpy()
        keep, val = (i.numpy() for i in holdout(y_train, len(y), linear.VAL_FRAC, seed + t))
        mean, std = x[keep].mean(0), x[keep].std(0).clip(min=1e-6)
        x = (x - mean) / std
        clf = LogisticRegression(solver="lbfgs", max_iter=max_iter, warm_start=True)
        models, val_acc, warned = [], [], 0
        for c in linear.C_GRID:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                clf.set_params(C=c).fit(x[keep], y[keep])
            warned += any(issubclass(w.category, ConvergenceWarning) for w in caught)
            models.append(copy.deepcopy(clf))
            val_acc.append(100.0 * float(np.mean(clf.predict(x[val]) == y[val])))
        best = int(np.argmax(val_acc))
        out.append((linear.C_GRID[best], val_acc, warned, models[best].coef_))
    return out


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_threaded_trials_match_the_sequential_probe_exactly(workers):
    import warnings

    h_train, y_train = _blobs(150, n_classes=4, spread=2.5)
    h_test, y_test = _blobs(60, n_classes=4, seed=1, spread=2.5)
    shown, filters = warnings.showwarning, list(warnings.filters)
    # max_iter 12 stops some fits short (1, 2 and 3 of 10 per trial): each counted on its own trial
    got = linear.linear_probe(h_train, y_train, h_test, y_test, trials=3, seed=4, max_iter=12, workers=workers)
    want = _sequential_reference(h_train, y_train, h_test, y_test, seed=4, max_iter=12)
    for t, (c, val_acc, warned, coef) in zip(got.trials, want, strict=True):
        assert (t.C, t.val_acc_pct, t.not_converged) == (c, val_acc, warned)
        assert np.array_equal(t.model.coef_, coef)
    assert [t.not_converged for t in got.trials] == [1, 2, 3]  # distinct per trial: a swap would show
    assert warnings.showwarning is shown and warnings.filters == filters  # the process's settings are back


def test_fitting_blocks_nest_and_restore_blas_threads():
    from threadpoolctl import threadpool_info

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with linear.fitting():
        with linear.fitting():
            assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


def test_holdout_is_stratified_disjoint_and_seeded():
    y = torch.arange(100) % 4
    keep, held = holdout(y, 100, 0.2, seed=1)
    assert len(held) == 20 and torch.bincount(y[held]).tolist() == [5, 5, 5, 5]
    assert set(keep.tolist()).isdisjoint(held.tolist()) and len(keep) + len(held) == 100
    assert torch.equal(held, holdout(y, 100, 0.2, seed=1)[1])


# ---------------------------------------------------------------------------------------------
# Equivariance probe


def test_r2_near_one_for_encoding_features_and_near_zero_for_random():
    gen = torch.Generator().manual_seed(0)
    y_train, y_test = torch.rand(600, 6, generator=gen), torch.rand(200, 6, generator=gen)
    w = torch.randn(6, 32, generator=gen)
    noise = lambda n: 0.01 * torch.randn(n, 32, generator=gen)  # noqa: E731
    r2 = r2_columns(y_train @ w + noise(600), y_train, y_test @ w + noise(200), y_test)
    assert r2.min() > 0.99
    r2_random = r2_columns(torch.randn(600, 32, generator=gen), y_train, torch.randn(200, 32, generator=gen), y_test)
    assert np.abs(r2_random).max() < 0.1


def test_probe_and_head_on_diff_features_that_encode_phi():
    spec, size = probe_spec(AffineSpec()), 16
    gen = torch.Generator().manual_seed(0)
    phi_train, phi_test = sample_phi(400, spec, size, 0), sample_phi(100, spec, size, 1)
    w = torch.randn(6, 24, generator=gen)  # the aggregation h − h_t is linear in the targets
    h_train, h_test = torch.randn(400, 24, generator=gen), torch.randn(100, 24, generator=gen)
    hw_train = h_train - affine.targets(phi_train, spec, size) @ w
    hw_test = h_test - affine.targets(phi_test, spec, size) @ w
    r2, r2_cols = probe(h_train, hw_train, phi_train, h_test, hw_test, phi_test, spec, size)
    assert set(r2) == {"rotation", "translation", "scale", "shear"} and min(r2.values()) > 0.99
    assert set(r2_cols) == set(affine.PARAM_NAMES)
    head = torch.nn.Linear(24, 6)  # the exact inverse of the encoding: R² = 1
    head.weight.data, head.bias.data = torch.linalg.pinv(w).T.contiguous(), torch.zeros(6)
    assert min(head_r2(head, None, h_test, hw_test, phi_test, spec, size).values()) > 0.999


def test_head_is_scored_with_the_pairs_batch_statistics_not_its_running_ones():
    spec, size = probe_spec(AffineSpec()), 16
    gen = torch.Generator().manual_seed(0)
    phi = sample_phi(500, spec, size, 1)
    w = torch.randn(6, 24, generator=gen)
    h = torch.randn(500, 24, generator=gen)
    hw = h - affine.targets(phi, spec, size) @ w
    z = affine.aggregate(h, hw, spec.aggregation)  # (N, 24): what the head reads
    mean, std = z.mean(0), (z.var(0, unbiased=False) + 1e-5).sqrt()
    inverse = torch.linalg.pinv(w).T  # (6, 24): targets = inverse @ z
    bn, linear = torch.nn.BatchNorm1d(24, affine=False), torch.nn.Linear(24, 6)
    linear.weight.data, linear.bias.data = inverse * std, inverse @ mean  # undoes the batch normalisation exactly
    bn.running_mean.fill_(5.0)  # running statistics from another distribution
    head = torch.nn.Sequential(bn, linear).eval()
    assert min(head_r2(head, None, h, hw, phi, spec, size).values()) > 0.999
    assert not head.training and torch.equal(bn.running_mean, torch.full((24,), 5.0))  # the caller's head untouched
    with torch.no_grad():  # the same head with its running statistics would be far off
        assert r2_score(affine.targets(phi, spec, size).numpy(), head(z).numpy()) < 0


# ---------------------------------------------------------------------------------------------
# Features, cache and the evaluate_* entry points (tiny untrained checkpoint, synthetic images)


def test_extract_is_eval_mode_forward(tiny_checkpoint):
    source = features.open_source(tiny_checkpoint)
    backbone = features.build_from(source, features.backbone_tensors(source))
    images = _images(10).images
    got = features.extract(backbone, images, batch_size=4, device=torch.device("cpu"), precision_name="fp32")
    with torch.no_grad():
        want = backbone.eval()(images.float() / 255)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cache_hit_and_keys(tiny_checkpoint, tmp_path):
    ckpt = tmp_path / "last.safetensors"
    shutil.copy(tiny_checkpoint, ckpt)
    source = features.open_source(ckpt)
    backbone = features.build_from(source, features.backbone_tensors(source))
    images, cpu = _images(12).images, torch.device("cpu")
    h1, hit1 = features.cached_features(source, backbone, images, "x-train", batch_size=8, device=cpu)
    h2, hit2 = features.cached_features(source, backbone, images, "x-train", batch_size=8, device=cpu)
    assert (hit1, hit2) == (False, True) and torch.equal(h1, h2)
    _, hit_subset = features.cached_features(source, backbone, images[:6], "x-train", batch_size=8, device=cpu)
    spec = probe_spec(AffineSpec())
    phi = sample_phi(12, spec, 16, 0)
    hw, hit_warp = features.cached_features(
        source, backbone, images, "x-train", batch_size=8, device=cpu, phi=phi, affine_spec=spec
    )
    assert not hit_subset and not hit_warp and not torch.equal(hw, h1)
    for f in (ckpt.parent / "eval" / "cache").iterdir():  # a corrupt entry is recomputed, not trusted
        f.write_bytes(b"junk")
    h3, hit3 = features.cached_features(source, backbone, images, "x-train", batch_size=8, device=cpu)
    assert not hit3 and torch.equal(h3, h1)


def test_evaluate_linear_writes_record_and_reuses_cache(tiny_checkpoint, tmp_path):
    ckpt = tmp_path / "last.safetensors"
    shutil.copy(tiny_checkpoint, ckpt)
    first = evaluate_linear(ckpt, trials=2, data=_dataset(), device="cpu")
    second = evaluate_linear(ckpt, trials=2, data=_dataset(), device="cpu")
    assert set(first["cache"].values()) == {"miss"} and set(second["cache"].values()) == {"hit"}
    assert first["result"] == second["result"]
    assert first["checkpoint"]["sha256"] == features.file_sha256(ckpt) and first["seeds"] == [0, 1]
    assert first["spec"]["backbone"]["width"] == 8
    assert (tmp_path / "eval" / "linear-digits.json").is_file()


def test_eval_scores_records_and_caches_the_one_checkpoint_it_opened(tiny_checkpoint, tmp_path, monkeypatch):
    # A run replaces last.safetensors (step 7, other weights) after the eval opened it, while it loads data:
    # the weights scored, the sha256 and step recorded and the cached features are all the opened file's.
    from safetensors.torch import load_file, save_file

    from affssl.eval import session

    newer = tmp_path / "newer.safetensors"
    meta = features.open_source(tiny_checkpoint).header | {"step": "7"}
    save_file({k: v + 0.5 if v.is_floating_point() else v for k, v in load_file(tiny_checkpoint).items()}, newer,
              metadata=meta)  # fmt: skip
    (tmp_path / "alone").mkdir()
    (tmp_path / "raced").mkdir()
    alone, raced = tmp_path / "alone" / "last.safetensors", tmp_path / "raced" / "last.safetensors"
    shutil.copy(tiny_checkpoint, alone)
    shutil.copy(tiny_checkpoint, raced)
    want = evaluate_knn(alone, data=_dataset(), device="cpu")
    load = session.load_eval_data

    def replaced_meanwhile(*args, **kwargs):
        os.replace(newer, raced)  # as the run's atomic checkpoint write does
        return load(*args, **kwargs)

    monkeypatch.setattr(session, "load_eval_data", replaced_meanwhile)
    got = evaluate_knn(raced, data=_dataset(), device="cpu")
    assert got["checkpoint"]["sha256"] == features.file_sha256(alone) != features.file_sha256(raced)
    assert got["checkpoint"]["step"] == want["checkpoint"]["step"] != "7"
    assert got["result"] == want["result"]
    (cached,) = (tmp_path / "raced" / "eval" / "cache").glob("*train*")
    (reference,) = (tmp_path / "alone" / "eval" / "cache").glob("*train*")
    assert cached.name == reference.name  # the same key: the opened file's hash and the same images
    assert torch.equal(load_file(cached)["features"], load_file(reference)["features"])


def test_evaluate_knn_and_affine_records(tiny_checkpoint, tmp_path):
    ckpt = tmp_path / "last.safetensors"
    shutil.copy(tiny_checkpoint, ckpt)
    knn = evaluate_knn(ckpt, data=_dataset(), device="cpu")
    assert set(knn["result"]["top1_pct"]) == {"20", "200"}
    aff = evaluate_affine(ckpt, data=_dataset(labelled=False), device="cpu")  # needs no labels
    assert set(aff["result"]["r2"]) == {"rotation", "translation", "scale", "shear"}
    assert set(aff["result"]["r2_head"]) == {"rotation", "translation", "scale", "shear"}  # trained with the module
    assert aff["seeds"] == [0, 1] and (tmp_path / "eval" / "affine-digits.json").is_file()


def test_carved_test_split_and_unlabelled_data(tiny_checkpoint):
    source = features.open_source(tiny_checkpoint)
    data = load_eval_data(source, data=_dataset(n_train=100, test=False), limit=40)
    assert data.test_carved and len(data.test.images) == 20 and len(data.train.images) == 40
    assert torch.bincount(data.test.labels).tolist() == [5, 5, 5, 5]
    with pytest.raises(DataError, match="unlabelled"):
        load_eval_data(source, data=_dataset(labelled=False))


# ---------------------------------------------------------------------------------------------
# The random-initialisation floor (affssl.floor)


def test_settle_batchnorm_is_the_cumulative_average_of_batch_statistics():
    from affssl.floor import settle_batchnorm

    bn = torch.nn.BatchNorm2d(3)
    images = _images(21, size=4).images  # 21 images in batches of 8, 8, 5
    used = settle_batchnorm(torch.nn.Sequential(bn).eval(), images, seed=3, batch_size=8)
    pick = torch.randperm(21, generator=torch.Generator().manual_seed(3))
    x = images[pick].double() / 255  # (21, 3, 4, 4)
    chunks = x.split(8)
    means = torch.stack([c.mean((0, 2, 3)) for c in chunks])  # (3 batches, C)
    variances = torch.stack([c.var((0, 2, 3), unbiased=True) for c in chunks])
    assert used == 21 and bn.momentum == 0.1 and not bn.training  # momentum and mode restored
    assert torch.allclose(bn.running_mean.double(), means.mean(0), atol=1e-6)  # equal weight per batch
    assert torch.allclose(bn.running_var.double(), variances.mean(0), atol=1e-6)


def test_floor_is_the_pretrain_initialisation_with_settled_batchnorm(tmp_path):
    from affssl import checkpoint
    from affssl.floor import write_floor
    from affssl.learner import Learner
    from affssl.spec import load_spec

    spec = load_spec("default", ["backbone.width=4", "data.image_size_px=16", "train.seed=5"])
    data = _dataset(n_train=40)
    a, b = write_floor(spec, tmp_path / "a", data), write_floor(spec, tmp_path / "b", data)
    ta, header = checkpoint.load(a)
    tb, _ = checkpoint.load(b)
    assert header["epoch"] == "0" and header["floor"] == "true" and ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)  # deterministic
    torch.manual_seed(5)
    init = Learner(spec).state_dict()
    weights = [k for k in init if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(ta[f"model.{k}"], init[k]) for k in weights)  # untrained
    mean = ta["model.backbone.bn1.running_mean"]
    assert not torch.equal(mean, torch.zeros_like(mean))  # settled on the images, not the init's 0 / 1
    mtime = a.stat().st_mtime_ns
    assert write_floor(spec, tmp_path / "a", data) == a and a.stat().st_mtime_ns == mtime  # kept when current
    record = evaluate_linear(a, trials=1, data=data, device="cpu")
    assert record["checkpoint"]["epoch"] == "0" and record["path"].startswith(str(tmp_path / "a" / "eval"))
