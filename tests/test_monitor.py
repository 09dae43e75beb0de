"""The online monitor and RUN/curves.png: scores against naive references, training untouched, 2 processes = 1."""

from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from sklearn.metrics import r2_score

from affssl import affine, curves, distributed, monitor, runs
from affssl.data import Dataset, Split
from affssl.engine import pretrain
from affssl.eval.equivariance import head_r2
from affssl.learner import Learner
from affssl.precision import Policy
from affssl.spec import load_spec

TINY = ["backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "data.limit=128"]
FP32 = Policy("cpu", None, torch.contiguous_format)
COMPONENTS_SORTED = ("rotation", "scale", "shear", "translation")


def tiny(*overrides: str):
    return load_spec("default", [*TINY, *overrides])


def toy_data(n_train: int, n_test: int | None, seed: int = 0) -> Dataset:
    """Random 16 px images whose labels follow their mean colour channel, so a kNN can find them."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        labels = torch.arange(n) % 3
        images = torch.randint(0, 100, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        images[torch.arange(n), labels] += 120  # (n, 16, 16) the label's channel brighter
        return Split(images, labels)

    return Dataset("toy", split(n_train), split(n_test) if n_test else None, ("r", "g", "b"))


def trained_looking(spec) -> Learner:
    """A Learner with random BatchNorm statistics and weights, so eval mode and batch statistics differ."""
    torch.manual_seed(0)
    learner = Learner(spec)
    g = torch.Generator().manual_seed(1)
    for m in learner.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return learner


def naive_knn_top1(h_bank, y_bank, h_query, y_query, k=20, t=0.07) -> float:
    """Per query: cosine similarities, the k nearest, votes exp(s / t) summed per class (ties: lower class)."""
    hits = 0
    for q, y in zip(h_query, y_query, strict=True):
        sims = [float(F.cosine_similarity(q, b, dim=0)) for b in h_bank]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = {}
        for i in order:
            votes[int(y_bank[i])] = votes.get(int(y_bank[i]), 0.0) + np.exp(sims[i] / t)
        hits += max(sorted(votes), key=lambda c: votes[c]) == int(y)
    return 100.0 * hits / len(y_query)


def test_subset_is_fixed_stratified_and_disjoint_without_a_test_split():
    spec = tiny("train.monitor_images=60", "train.monitor_queries=30")
    data = toy_data(150, None)
    a, b = monitor.pick(data, spec), monitor.pick(data, spec)
    assert torch.equal(a.bank.index, b.bank.index) and torch.equal(a.queries.index, b.queries.index)
    assert torch.equal(a.phi, b.phi)
    assert len(a.bank) == 60 and len(a.queries) == 30 and a.phi.shape == (30, 6)
    assert a.bank.source is data.train.images and a.queries.source is data.train.images  # indexed, not copied
    assert torch.equal(a.bank.labels, data.train.labels[a.bank.index])
    assert a.bank.labels.bincount().tolist() == [20, 20, 20] and a.queries.labels.bincount().tolist() == [10] * 3
    assert not set(a.bank.index.tolist()) & set(a.queries.index.tolist())  # held out of the bank
    other = monitor.pick(data, tiny("train.monitor_images=60", "train.monitor_queries=30", "train.seed=1"))
    assert not torch.equal(a.bank.index, other.bank.index)
    test_data = toy_data(150, 45)
    with_test = monitor.pick(test_data, spec)
    assert (
        len(with_test.queries) == 30 and len(with_test.bank) == 60 and with_test.queries.source is test_data.test.images
    )
    assert monitor.pick(data, tiny("train.monitor_every=0")) is None
    assert monitor.pick(Dataset("x", Split(data.train.images, None), None, ()), spec) is None
    assert monitor.pick(data, tiny("affine.enabled=false")).phi is None


def test_due_every_n_epochs_and_after_the_last():
    spec = tiny("train.epochs=5", "train.monitor_every=2")
    assert [e for e in range(1, 6) if monitor.due(spec, e)] == [2, 4, 5]
    assert not any(monitor.due(tiny("train.monitor_every=0"), e) for e in range(1, 4))


@pytest.mark.parametrize("location", ["encoder", "projector"])
def test_scores_match_naive_knn_and_the_equivariance_probe(location):
    spec = tiny("train.monitor_images=90", "train.monitor_queries=40", f"affine.location={location}")
    subset = monitor.pick(toy_data(150, 60), spec)
    learner = trained_looking(spec).train()
    state = {k: v.clone() for k, v in learner.state_dict().items()}
    scores = monitor.Monitor(subset, spec, FP32, torch.device("cpu")).score(learner)

    assert all(m.training for m in learner.modules())  # train mode restored
    assert all(torch.equal(state[k], v) for k, v in learner.state_dict().items())  # no running statistic moved
    reference = trained_looking(spec).eval()
    bank, queries = (s.source[s.index].float() / 255 for s in (subset.bank, subset.queries))
    with torch.no_grad():
        h_bank, h_query = reference.backbone(bank), reference.backbone(queries)
        h_warped = reference.backbone(affine.warp(queries[: len(subset.phi)], subset.phi, spec.affine))
    top1 = naive_knn_top1(h_bank, subset.bank.labels, h_query, subset.queries.labels)
    assert scores["monitor_knn_top1"] == pytest.approx(top1, abs=1e-9)
    embed = reference.method.embed if location == "projector" else None
    expected = head_r2(reference.head.mlp, embed, h_query[: len(subset.phi)], h_warped, subset.phi, spec.affine, 16)
    for name, r2 in expected.items():
        assert scores[f"monitor_r2_{name}"] == pytest.approx(r2, abs=1e-5)
    # as trained: a copy in train mode, clean and warped queries each encoded batch by batch (batch size 32)
    as_trained = trained_looking(spec).train()
    w, b = len(subset.phi), spec.train.batch_size
    warped = affine.warp(queries[:w], subset.phi, spec.affine)
    encoder = as_trained.embedded if location == "projector" else as_trained.backbone  # the head's input, per batch
    with torch.no_grad():
        h_b = torch.cat([encoder(queries[i : min(w, i + b)]) for i in range(0, w, b)])  # (W, F or D)
        hw_b = torch.cat([encoder(warped[i : i + b]) for i in range(0, w, b)])
    expected_b = head_r2(as_trained.head.mlp, None, h_b, hw_b, subset.phi, spec.affine, 16)
    for name, r2 in expected_b.items():
        assert scores[f"monitor_r2_batch_{name}"] == pytest.approx(r2, abs=1e-5)
        assert abs(r2 - expected[name]) > 1e-3  # the two scorings differ here: the test tells them apart
    assert scores["monitor_time_s"] > 0
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    assert monitor.describe(scores) == (f"kNN {top1:.1f} %  R² {mean(expected_b):.2f} "
                                        f"(eval mode {mean(expected):.2f})")  # fmt: skip


def test_r2_per_column_is_sklearns():
    g = torch.Generator().manual_seed(0)
    y, p = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g)
    p[:, 1] = y[:, 1] + 0.1 * p[:, 1]
    ours = monitor.r2_per_column(y, p).numpy()
    assert np.allclose(ours, r2_score(y.double().numpy(), p.double().numpy(), multioutput="raw_values"), atol=1e-12)
    constant = torch.ones(10, 1)
    assert monitor.r2_per_column(constant, constant).tolist() == [1.0]
    assert monitor.r2_per_column(constant, constant * 2).tolist() == [0.0]


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))  # fmt: skip
    try:
        torch.save(_sharded_scores(), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _sharded_scores() -> dict:
    # bank 130 in batches of 32: 5 batches, so rank 0 embeds 3 and rank 1 embeds 2 (one padded slot)
    spec = tiny("train.monitor_images=130", "train.monitor_queries=45", "train.batch_size=32")
    subset = monitor.pick(toy_data(200, 60), spec)
    learner = trained_looking(spec)
    learner = distributed.sync_batchnorm(learner)  # as the engine has it under torchrun
    scores = monitor.Monitor(subset, spec, FP32, torch.device("cpu")).score(learner.train())
    scores.pop("monitor_time_s")
    return scores


@pytest.mark.slow
def test_two_processes_score_what_one_does(tmp_path):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        mp.start_processes(_worker, args=(str(tmp_path),), nprocs=2, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: the same kernels at the same thread count
    try:
        single = _sharded_scores()
    finally:
        torch.set_num_threads(before)
    assert ranks[0] == single and ranks[1] == single  # exactly: the same batches through the same kernels


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_watching_leaves_training_bit_identical(tmp_path, precision):
    """Design rule 17: the same checkpoints with the monitor (and TensorBoard, when installed) as without."""
    common = ["train.epochs=2", "method.name=byol", f"train.precision={precision}", "train.checkpoint_every=1"]
    watched = ["train.monitor_images=64", "train.monitor_queries=32"]
    try:
        import tensorboard  # noqa: F401

        watched.append("train.loggers=['tensorboard']")
    except ImportError:
        pass
    plain = pretrain(tiny(*common, "train.monitor_every=0"), tmp_path / "plain", show_progress=False)
    seen = pretrain(tiny(*common, *watched), tmp_path / "seen", show_progress=False)
    for name in ("epoch-0001.safetensors", plain.name):
        a, b = load_file(tmp_path / "plain" / name), load_file(tmp_path / "seen" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    with safe_open(str(plain), framework="pt") as f, safe_open(str(seen), framework="pt") as g:
        same = lambda meta: {k: v for k, v in meta.items() if k not in ("spec", "metrics")}  # noqa: E731
        assert same(f.metadata()) == same(g.metadata())  # the run's spec differs, and metrics hold its timings
    epochs = [r for r in runs.read_metrics(tmp_path / "seen") if r["kind"] == "epoch"]
    assert [sorted(k for k in r if k.startswith("monitor_")) for r in epochs] == [
        ["monitor_knn_top1", *(f"monitor_r2_batch_{c}" for c in COMPONENTS_SORTED),
         *(f"monitor_r2_{c}" for c in COMPONENTS_SORTED), "monitor_time_s"]] * 2  # fmt: skip
    assert not any(k.startswith("monitor_") for r in runs.read_metrics(tmp_path / "plain") for k in r)


def test_curves_png_is_redrawn_at_the_expected_size(tmp_path):
    run = tmp_path / "run"
    pretrain(tiny("train.epochs=1", "train.monitor_images=64", "train.monitor_queries=32"), run, show_progress=False)
    with Image.open(run / curves.NAME) as image:
        assert image.size == (1200, 650) and image.format == "PNG"
    first = (run / curves.NAME).read_bytes()
    runs.append_metrics(run, {"kind": "epoch", "epoch": 2, "step": 8, "loss": 1.0, "monitor_knn_top1": 50.0})
    curves.draw(run)
    assert (run / curves.NAME).read_bytes() != first
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_curves_are_redrawn_when_the_time_since_the_last_drawing_pays_for_it(tmp_path, monkeypatch):
    from affssl import watch
    from affssl.spec import RunSpec

    drawn: list[int] = []
    monkeypatch.setattr(curves, "draw", lambda run: drawn.append(len(drawn)))
    with watch.Watch(tmp_path, RunSpec()) as w:
        w.epoch_end()  # a quick first epoch is not drawn: the first drawing costs FIRST_DRAW_S
        assert drawn == []
        w.drawn_at -= watch.DRAW_EVERY_COST * watch.FIRST_DRAW_S
        w.epoch_end()  # a first epoch as long as 20 first drawings is
        assert len(drawn) == 1
        w.draw_cost_s = 3600.0  # a drawing as slow as an hour: not worth redrawing after a quick epoch
        w.epoch_end()
        assert len(drawn) == 1
        w.epoch_end(final=True)  # the last epoch always is
        assert len(drawn) == 2
        w.epoch_end()
        assert len(drawn) == 2
    assert len(drawn) == 3  # an epoch left undrawn is drawn on exit
    w.draw_cost_s, w.drawn_at = 0.0, 0.0
    w.epoch_end()
    assert len(drawn) == 4  # cheap drawings redraw at every epoch
