"""The online monitor: is the encoder learning? Scored during training on a fixed labelled subset.

Every `train.monitor_every` epochs (and after the last one) the current encoder, in eval mode,
under torch.no_grad and the run's precision, embeds clean images of a fixed subset picked once
from the run's seed with a generator of its own:

- kNN top-1 (k = 20, cosine similarity, votes weighted exp(s / 0.07), as solo-learn's online kNN):
  a bank of `train.monitor_images` training images (stratified) labels the queries, up to
  `train.monitor_queries` images of the test split (stratified), or, without a test split, as many
  training images held out of the bank;
- with the affine module on, the R² per component of the module's own head on MONITOR_WARPS queries
  warped by a fixed φ (the run's ranges and components), the head's BatchNorm normalising with the
  statistics of the scored pairs as in training (see affssl.eval.equivariance.head_r2), twice:
  `monitor_r2_<component>` with the encoder in eval mode (running statistics), and
  `monitor_r2_batch_<component>` with the encoder as it is trained, each pass of clean and of warped
  queries normalised by its own batch statistics (affssl.batchstats: the two can differ by 0.8 for
  rotation, results/cifar10-cpu-objectives/pilots.md). Neither moves a running statistic.

The rows are chosen on labels alone (`choose`), so both storages pick the same ones: on tensor
storage they index the decoded splits in memory (`pick`); on chunk storage, where no decoded set is
in memory, they are decoded once at the run's start with the tensor cache's transform
(`pick_chunks`, affssl.data.monitorset), so a monitor image has the same pixels on either storage.

Watching never changes training (design rule 17): the monitor draws no number from a training
generator, restores every module's train/eval mode and leaves every parameter and buffer as it
was; tests/test_monitor.py (tests/test_monitor_chunks.py on chunks) checks bit-identical checkpoints
with and without it. Under torchrun each process embeds every world-th batch and the features are
gathered in order, so every process holds the same result as one process would (the same batches
through the same kernels).

Dimensions: N bank images, M queries, W warped queries, F feature dimension, D head input width.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from affssl import affine, batchstats, distributed
from affssl.data import Dataset, monitorset, stratified
from affssl.data.chunkread import ChunkFeed
from affssl.data.sources import labelled
from affssl.eval.knn import knn_predict
from affssl.precision import Policy
from affssl.spec import RunSpec

K = 20
TEMPERATURE = 0.07  # solo-learn's online kNN (affssl eval knn reports T = 0.1, as DINO)
MONITOR_WARPS = 1000  # queries warped for the head's R²


@dataclass(frozen=True)
class Images:
    """Rows of a split, indexed on demand: the split's images are not copied (under torchrun they are
    one memory map shared by the node's processes)."""

    source: Tensor  # (n_split, C, S, S) uint8, the split's images
    index: Tensor  # (n,) int64 rows of source
    labels: Tensor  # (n,) int64

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, start: int, stop: int) -> Tensor:
        return self.source[self.index[start:stop]]  # (stop − start, C, S, S) uint8


@dataclass(frozen=True)
class Subset:
    """The monitor's fixed images and labels, picked once per run."""

    bank: Images  # N training images
    queries: Images  # M test (or held-out training) images
    phi: Tensor | None  # (W, 6) warps of the first W queries; None with the module off
    n_classes: int
    setup_s: float = 0.0  # seconds spent decoding the images (chunk storage; 0 when indexed in memory)


def monitor_seed(seed: int) -> int:
    """A seed for the monitor's picks, derived from train.seed apart from every training stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}/monitor".encode()).digest()[:8], "little") >> 1


@dataclass(frozen=True)
class Picks:
    """Which rows the monitor scores, chosen on labels alone (so both storages pick the same rows)."""

    bank: Tensor  # (N,) sorted rows of the training split
    queries: Tensor  # (M,) sorted rows of the test split, or of the training split when held_out
    held_out: bool  # no labelled test split: the queries are training rows kept out of the bank
    phi: Tensor | None  # (W, 6) warps of the first W queries; None with the module off
    n_classes: int


def choose(train_labels: Tensor | None, test_labels: Tensor | None, spec: RunSpec) -> Picks | None:
    """The monitor's rows for labels (n_train,) and (n_test,) int64, or None when it is off or there are no labels.

    The one place that defines the picking rules; pick (tensor storage) and pick_chunks apply them.
    """
    if spec.train.monitor_every == 0 or train_labels is None:
        return None
    gen = torch.Generator().manual_seed(monitor_seed(spec.train.seed))
    n_train, n_bank, n_query = len(train_labels), spec.train.monitor_images, spec.train.monitor_queries
    held_out = test_labels is None or not len(test_labels)
    if not held_out:
        bank = stratified(train_labels, min(n_bank, n_train), gen)  # (N,) sorted
        query = stratified(test_labels, min(n_query, len(test_labels)), gen)  # (M,)
        query_labels = test_labels[query]
    else:  # hold queries out of train, the bank from the rest
        if n_train < 2:
            return None
        query = stratified(train_labels, min(n_query, n_train // 2), gen)  # (M,)
        rest = torch.ones(n_train, dtype=torch.bool)
        rest[query] = False
        rest = rest.nonzero().squeeze(1)  # (n_train − M,)
        bank = rest[stratified(train_labels[rest], min(n_bank, len(rest)), gen)]
        query_labels = train_labels[query]
    phi = None
    if spec.affine.enabled:
        phi = affine.sample(min(MONITOR_WARPS, len(query)), spec.affine, spec.data.image_size_px, gen)  # (W, 6)
    n_classes = int(max(train_labels.max(), query_labels.max())) + 1
    return Picks(bank, query, held_out, phi, n_classes)


def pick(data: Dataset, spec: RunSpec) -> Subset | None:
    """The fixed subset of a run on tensor storage, rows of the decoded splits (indexed, not copied), or None."""
    train, test = data.train, data.test
    picks = choose(train.labels, None if test is None else test.labels, spec)
    if picks is None:
        return None
    split = train if picks.held_out else test
    queries = Images(split.images, picks.queries, split.labels[picks.queries])
    return Subset(Images(train.images, picks.bank, train.labels[picks.bank]), queries, picks.phi, picks.n_classes)


def pick_chunks(feed: ChunkFeed, spec: RunSpec, progress: bool = False) -> Subset | None:
    """The fixed subset of a run on chunk storage: the rows `choose` picks, decoded once (affssl.data.monitorset).

    Rows are those of the feed's training items (after data.limit, as on the tensor storage), so both storages
    score the same images. The seconds it took are in the subset's setup_s.
    """
    t0 = time.perf_counter()
    labels = None if feed.chunks.labels is None else feed.chunks.labels[feed.items]  # (n_train,)
    test = None if labels is None else monitorset.find_test_split(spec.data, feed.chunks.classes)
    picks = choose(labels, None if test is None else test[1], spec)
    if picks is None:
        return None
    files = None if picks.held_out else test[0]
    size, batch = spec.data.image_size_px, spec.train.batch_size
    bank, queries, kept = monitorset.decode(feed, size, picks.bank, picks.queries, files, batch, progress)
    if not len(queries):  # every picked test image unreadable
        return None
    query_labels = (labels if picks.held_out else test[1])[picks.queries][kept]  # (M',)
    phi = None if picks.phi is None else picks.phi[: len(queries)]  # (W, 6)
    return Subset(Images(bank, torch.arange(len(bank)), labels[picks.bank]),
                  Images(queries, torch.arange(len(queries)), query_labels), phi, picks.n_classes,
                  time.perf_counter() - t0)  # fmt: skip


def startup_line(subset: Subset | None, spec: RunSpec) -> str | None:
    """The note at a run's start: what decoding a subset from chunks cost, or that an unlabelled set has no monitor."""
    if subset is None:
        unlabelled = spec.train.monitor_every and not labelled(spec.data.dataset)
        return f"data set {spec.data.dataset} is unlabelled: no online monitor (its kNN needs labels)" if unlabelled \
            else None  # fmt: skip
    if not subset.setup_s:
        return None
    mib = (len(subset.bank) + len(subset.queries)) * subset.bank.source[0].numel() / 2**20
    return (f"online monitor: {len(subset.bank):,} + {len(subset.queries):,} images decoded in {subset.setup_s:.1f} s "
            f"({mib:,.0f} MiB held in memory)")  # fmt: skip


def due(spec: RunSpec, epoch: int) -> bool:
    """Whether the monitor scores after `epoch` (1-based): every monitor_every epochs and after the last."""
    every = spec.train.monitor_every
    return every > 0 and (epoch % every == 0 or epoch == spec.train.epochs)


class Monitor:
    """Scores a Learner on its run's fixed subset; `score` is a collective under torchrun (every rank calls it)."""

    def __init__(self, subset: Subset, spec: RunSpec, policy: Policy, device: torch.device):
        self.subset, self.spec, self.policy, self.device = subset, spec, policy, device
        self.batch = spec.train.batch_size  # the same batches in 1 or N processes: identical features

    def score(self, learner: nn.Module) -> dict[str, float]:
        """metrics.jsonl fields: monitor_knn_top1 (%), monitor_r2_<component> (module on), monitor_time_s."""
        t0 = time.perf_counter()
        s = self.subset
        modes = [(m, m.training) for m in learner.modules()]
        learner.eval()  # BatchNorm normalises with its running statistics and leaves them alone
        try:
            with torch.no_grad():
                encoder = learner.backbone
                dim = encoder.feat_dim
                h_bank = self.embed(encoder, s.bank, dim)  # (N, F)
                h_query = self.embed(encoder, s.queries, dim)  # (M, F)
                pred = knn_predict(h_bank, s.bank.labels.to(self.device), h_query, (K,), TEMPERATURE, s.n_classes)
                top1 = 100.0 * float((pred[K].cpu() == s.queries.labels).double().mean())
                out = {"monitor_knn_top1": top1}
                if s.phi is not None and learner.head is not None:
                    out |= self.head_r2(learner, h_query[: len(s.phi)], "monitor_r2_")
                    with batchstats.batch_statistics(learner):  # as trained: each pass on its own statistics
                        out |= self.head_r2(learner, None, "monitor_r2_batch_")
        finally:
            for module, mode in modes:
                module.training = mode
        return out | {"monitor_time_s": time.perf_counter() - t0}

    def head_r2(self, learner: nn.Module, h: Tensor | None, prefix: str) -> dict[str, float]:
        """R² per trained component ("<prefix><component>") of the head's prediction of the fixed φ from
        (h, h_warped) pairs: h (W, F) the clean queries' encoder features (None: encoded here batch by batch,
        as h_warped always is)."""
        s, spec = self.subset, self.spec.affine
        phi = s.phi.to(self.device)  # (W, 6)
        encoder: Callable[[Tensor], Tensor] = learner.backbone
        if spec.location == "projector":
            encoder, h = learner.embedded, None if h is None else learner.method.embed(h)  # (W, D)
        if h is None:
            h = self.embed(encoder, s.queries, learner.head.feat_dim, n=len(phi))  # (W, D): the first W queries
        h_warped = self.embed(encoder, s.queries, learner.head.feat_dim, phi)  # (W, D): the first W queries
        with batchstats.batch_statistics(learner.head):  # the head normalises by the scored pairs, as in training
            pred = learner.head.predict(affine.aggregate(h, h_warped, spec.aggregation)).float()  # (W, k)
        target = affine.targets(phi, spec, self.spec.data.image_size_px)  # (W, k)
        cols = r2_per_column(target, pred)  # (k,)
        out, i = {}, 0
        for name in spec.components:
            width = len(affine.COLUMNS[name])
            out[f"{prefix}{name}"] = float(cols[i : i + width].mean())
            i += width
        return out

    def embed(self, encoder: Callable[[Tensor], Tensor], images: Images, dim: int, phi: Tensor | None = None,
              n: int | None = None) -> Tensor:  # fmt: skip
        """Features (n, dim) float32 on the device of the first n images (all; with φ (n, 6): len(φ)), warped by φ.

        The batches are dealt round-robin to the processes and the features gathered back in order.
        """
        n = n or (len(images) if phi is None else len(phi))
        world, rank = distributed.world_size(), distributed.rank()
        n_batches = -(-n // self.batch)
        slots = -(-n_batches // world)  # batches per process, the last ones padded
        mine = torch.zeros(slots, self.batch, dim, device=self.device)  # (slots, B, dim)
        for k, j in enumerate(range(rank, n_batches, world)):
            rows = slice(j * self.batch, min(n, (j + 1) * self.batch))
            x = images.rows(rows.start, rows.stop).to(self.device, non_blocking=True).float().div_(255)  # (b, C, S, S)
            if phi is not None:
                x = affine.warp(x, phi[rows], self.spec.affine)
            with self.policy.autocast():
                mine[k, : len(x)] = encoder(x.contiguous(memory_format=self.policy.memory_format)).float()
        every = distributed.stack(mine)  # (world, slots, B, dim): batch j is at [j % world, j // world]
        return every.transpose(0, 1).reshape(-1, dim)[:n]  # (n, dim)


def r2_per_column(target: Tensor, pred: Tensor) -> Tensor:
    """Coefficient of determination per column (k,), float64, as sklearn's r2_score: a constant target
    scores 1 when predicted exactly, else 0."""
    y, p = target.double(), pred.double()  # (W, k)
    ss_res = (y - p).pow(2).sum(0)
    ss_tot = (y - y.mean(0)).pow(2).sum(0)
    exact = torch.where(ss_res == 0, 1.0, 0.0).to(y)
    return torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp(min=1e-300), exact).cpu()


def describe(scores: dict[str, float]) -> str:
    """The progress line's part: 'kNN 41.2 %  R² 0.63 (eval mode 0.21)' (R²: mean over components; first as
    trained, batch statistics; then with the encoder in eval mode)."""
    text = f"kNN {scores['monitor_knn_top1']:.1f} %"
    batch = [v for k, v in scores.items() if k.startswith("monitor_r2_batch_")]
    running = [v for k, v in scores.items() if k.startswith("monitor_r2_") and not k.startswith("monitor_r2_batch_")]
    if not batch:
        return text
    return text + f"  R² {sum(batch) / len(batch):.2f} (eval mode {sum(running) / len(running):.2f})"
