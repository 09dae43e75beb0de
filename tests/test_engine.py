"""Pretraining end to end on tiny data: files, loss, determinism, exact resume after SIGKILL."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import header
from PIL import Image
from safetensors.torch import load_file

from affssl import runs
from affssl.checkpoint import TRAIN_FORMAT
from affssl.engine import pretrain
from affssl.learner import Learner
from affssl.runenv import with_threads
from affssl.spec import RunSpec, load_spec

TINY = ["backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "data.limit=128"]
CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def tiny(*overrides: str) -> RunSpec:
    return load_spec("default", [*TINY, *overrides])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """A labelled image folder with train/ and test/: two classes told apart by colour and shape."""
    root = tmp_path_factory.mktemp("folder")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 48), ("test", 16)):
        for label, name in enumerate(("reds", "blues")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 60, (20, 20, 3), generator=g, dtype=torch.uint8)
                pixels[4:16, 4 + 4 * label : 12 + 4 * label, label * 2] = 230
                mode = "L" if i % 5 == 0 else "RGB"  # grey-scale files mixed in
                Image.fromarray(pixels.numpy()).convert(mode).save(root / split / name / f"{i:03d}.png")
    return root


METHOD_PARTS = {
    "simclr": ("projector",),
    "byol": ("projector", "predictor", "target_backbone", "target_projector"),
    "barlow": ("projector",),
    "vicreg": ("projector",),
    "mocov3": ("projector", "predictor", "momentum_backbone", "momentum_projector"),
    "simsiam": ("projector", "predictor"),
    "dino": ("projector", "prototypes", "teacher_backbone", "teacher_projector", "teacher_prototypes", "center"),
}
MOMENTUM = {"byol": "target_backbone", "mocov3": "momentum_backbone", "dino": "teacher_backbone"}


@pytest.mark.parametrize("base", list(METHOD_PARTS))
@pytest.mark.parametrize("with_affine", [True, False])
def test_pretrain_writes_run_and_loss_goes_down(tmp_path, base, with_affine):
    spec = tiny(f"method.name={base}", f"affine.enabled={str(with_affine).lower()}", "train.epochs=4",
                "train.log_every=2", "data.limit=256", "train.batch_size=64", "optim.lr=0.003",
                "method.proj_hidden=64", "method.proj_out=16")  # fmt: skip
    run = tmp_path / "run"
    last = pretrain(spec, run, show_progress=False)
    assert last == run / runs.LAST and last.is_file()
    stored = spec.model_copy(update={"data": spec.data.model_copy(update={"storage": "tensor"})})  # auto, resolved
    stored = with_threads(stored, torch.get_num_threads())  # train.threads = auto is stored as the number used
    assert RunSpec.model_validate_json((run / runs.SPEC).read_text()) == stored
    meta = header(last)
    assert meta["format"] == TRAIN_FORMAT and RunSpec.model_validate_json(meta["spec"]) == stored
    epochs = [r for r in runs.read_metrics(run) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert ("loss_affine" in epochs[0]) == with_affine
    if base == "dino":  # starts below log K and rises towards it while centring removes what all images share
        assert all(r["loss_ssl"] < math.log(spec.method.prototypes) + 0.01 for r in epochs), epochs
    else:
        assert epochs[-1]["loss"] < epochs[0]["loss"], [r["loss"] for r in epochs]
    if with_affine:
        assert epochs[-1]["loss_affine"] < epochs[0]["loss_affine"]
    tensors = load_file(last)
    keys = tensors.keys()
    assert any(k.startswith("model.head.") for k in keys) == with_affine
    assert any(k.startswith("optim.") for k in keys)
    for part in METHOD_PARTS[base]:  # the method's own tensors travel in the checkpoint
        assert any(k == f"model.method.{part}" or k.startswith(f"model.method.{part}.") for k in keys), part
    if base in MOMENTUM:  # a separate EMA copy that lags the online encoder
        copy = f"model.method.{MOMENTUM[base]}.conv1.weight"
        assert not torch.equal(tensors[copy], tensors["model.backbone.conv1.weight"])


def test_pretrain_on_image_folder(tmp_path, image_folder):
    spec = tiny(f"data.dataset={json.dumps(str(image_folder))}", "data.limit=96", "train.epochs=2")
    pretrain(spec, tmp_path / "run", show_progress=False)
    assert (tmp_path / "run" / runs.LAST).is_file()


@pytest.mark.slow
def test_pretrain_on_cifar10(tmp_path, cifar10_dir):
    for base in ("simclr", "byol", "barlow"):
        for on in ("true", "false"):
            spec = tiny(f"data.dataset={json.dumps(str(cifar10_dir))}", f"method.name={base}",
                        f"affine.enabled={on}", "train.epochs=2", "data.limit=128")  # fmt: skip
            run = tmp_path / f"{base}-{on}"
            pretrain(spec, run, show_progress=False)
            epochs = [r for r in runs.read_metrics(run) if r["kind"] == "epoch"]
            assert len(epochs) == 2 and all(r["loss"] == r["loss"] for r in epochs)  # finite


@pytest.mark.parametrize("overrides", [
    ["affine.views=2"], ["affine.aggregation=concat"], ["affine.location=projector"], ["affine.fill=bounded"],
    ["affine.components=['scale','shear']"], ["method.name=byol", "affine.location=projector"],
    ["affine.interpolation=bilinear", "affine.target=standardized"], ["optim.schedule=cosine", "optim.warmup_epochs=1"],
])  # fmt: skip
def test_ablation_variants_train(tmp_path, overrides):
    spec = tiny("train.epochs=1", *overrides)
    pretrain(spec, tmp_path / "run", show_progress=False)
    assert len([r for r in runs.read_metrics(tmp_path / "run") if r["kind"] == "epoch"]) == 1


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_gives_bit_identical_checkpoints(tmp_path, precision):
    spec = tiny("train.epochs=2", "method.name=byol", f"train.precision={precision}")
    a = load_file(pretrain(spec, tmp_path / "a", show_progress=False))
    b = load_file(pretrain(spec, tmp_path / "b", show_progress=False))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {v.dtype for k, v in a.items() if k.startswith("model.")} <= {torch.float32, torch.int64}  # fp32 weights
    c = load_file(pretrain(tiny("train.epochs=2", "method.name=byol", "train.seed=1", f"train.precision={precision}"),
                           tmp_path / "c", show_progress=False))  # fmt: skip
    assert not torch.equal(a["model.backbone.conv1.weight"], c["model.backbone.conv1.weight"])


@pytest.mark.parametrize(("base", "prefix_equal"), [("simclr", True), ("barlow", True), ("byol", False)])
def test_a_constant_rate_run_is_the_first_epochs_of_a_longer_one(tmp_path, base, prefix_equal):
    """At a constant rate without warm-up, 2 epochs of a 3-epoch run are a 2-epoch run, bit for bit: nothing
    but the EMA ramp (BYOL's τ → 1 over the whole run) depends on the run's length. results/cifar10-cpu-v2
    reads shorter protocols off epoch checkpoints on the strength of this."""
    common = [f"method.name={base}", "optim.name=adam", "optim.schedule=constant", "optim.warmup_epochs=0"]
    short = load_file(pretrain(tiny(*common, "train.epochs=2"), tmp_path / "short", show_progress=False))
    pretrain(tiny(*common, "train.epochs=3", "train.checkpoint_every=1"), tmp_path / "long", show_progress=False)
    prefix = load_file(runs.epoch_checkpoint(tmp_path / "long", 2))
    weights = [k for k in short if k.startswith("model.")]
    assert weights and all(k in prefix for k in weights)
    assert all(torch.equal(short[k], prefix[k]) for k in weights) == prefix_equal


def test_bf16_and_fp32_runs_differ_but_stay_close(tmp_path):
    """The policy is really applied (bf16 changes the numbers) and bf16 stays near fp32 after a few steps."""
    runs_ = {p: load_file(pretrain(tiny("train.epochs=1", f"train.precision={p}"), tmp_path / p, show_progress=False))
             for p in ("fp32", "bf16")}  # fmt: skip
    a, b = runs_["fp32"]["model.backbone.conv1.weight"], runs_["bf16"]["model.backbone.conv1.weight"]
    assert not torch.equal(a, b)
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_param_overhead_logged(tmp_path):
    pretrain(tiny("train.epochs=1"), tmp_path / "run", show_progress=False)
    params = runs.read_metrics(tmp_path / "run")[0]
    assert params["kind"] == "params" and params["head"] > 0
    assert params["head_overhead_frac"] == pytest.approx(params["head"] / params["total"])


def test_byol_predictor_steps_at_its_own_learning_rate(tmp_path):
    """One Adam step moves each weight by lr·g/(|g| + eps): the predictor's by pred_lr_scale × that, the rest alike."""
    one_step = ["method.name=byol", "affine.enabled=false", "train.epochs=1", "data.limit=32"]
    torch.manual_seed(0)  # pretrain seeds the initial weights with train.seed = 0
    start = Learner(tiny(*one_step, "train.precision=fp32")).state_dict()
    moved = {}
    for scale in (1.0, 10.0):
        spec = tiny(*one_step, "train.precision=fp32", f"method.pred_lr_scale={scale}")
        pretrain(spec, tmp_path / str(scale), show_progress=False)
        end = load_file(tmp_path / str(scale) / runs.LAST)
        moved[scale] = {k: end[f"model.{k}"].float() - v.float() for k, v in start.items() if v.is_floating_point()}
    for key, delta in moved[1.0].items():
        want = delta * 10 if key.startswith("method.predictor.") and "running" not in key else delta
        torch.testing.assert_close(moved[10.0][key], want, rtol=1e-4, atol=1e-7, msg=key)
    assert moved[1.0]["method.predictor.0.weight"].abs().max() > 0


def test_optimizer_groups_put_each_trainable_parameter_once():
    learner = Learner(tiny("method.name=byol", "method.pred_lr_scale=10"))
    groups = learner.optim_groups()
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    names = {id(p): n for n, p in learner.named_parameters()}
    assert {names[id(p)].split(".")[1] for p in groups[1]["params"]} == {"predictor"}
    trainable = [p for p in learner.parameters() if p.requires_grad]
    assert sorted(map(id, trainable)) == sorted(id(p) for g in groups for p in g["params"])
    assert len(Learner(tiny("method.name=simclr")).optim_groups()) == 1


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "affssl", "pretrain", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, precision):
    args = ["--no-progress", "--epochs", "5", "--set", "method.name=byol", "--set", f"train.precision={precision}"]
    args += [a for o in TINY for a in ("--set", o)]
    full = cli(*args, "--out", str(tmp_path / "full"))
    assert full.wait(timeout=600) == 0, full.stdout.read().decode()

    run = tmp_path / "killed"
    proc = cli(*args, "--out", str(run))
    deadline = time.time() + 600
    while not (run / runs.LAST).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(header(run / runs.LAST)["epoch"])
    assert 1 <= killed_at < 5, "the run ended before it could be killed"

    resumed = cli("--no-progress", "--resume", "--out", str(run))
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read().decode()
    a, b = load_file(tmp_path / "full" / runs.LAST), load_file(run / runs.LAST)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    epochs = [r["epoch"] for r in runs.read_metrics(run) if r["kind"] == "epoch"]
    assert epochs == [1, 2, 3, 4, 5]
