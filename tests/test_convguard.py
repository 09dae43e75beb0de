"""The guard against torch's bf16 weight-gradient bug of strided, padded convolutions on tiny inputs.

Oracles: the fp32 gradient of the same layer (the guarded layer must equal it bit for bit), and the
same run under two malloc fill values (MALLOC_PERTURB_): a gradient read from unwritten memory
differs between them, an exact one cannot. The subprocess checks need a CPU with native bf16
(train.precision = auto is fp32 elsewhere and there is nothing to guard); they hold either way.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from affssl import convguard, faults
from affssl.backbones import build_backbone
from affssl.engine import check_finite
from affssl.errors import UserError
from affssl.learner import Learner
from affssl.spec import BackboneSpec, load_spec

CPU = torch.device("cpu")
# Every encoder the README names, at 16 px (resnet18 also without the CIFAR stem: the run), except
# convnext_tiny: its stride-2 2×2 downsampling cannot take 16 px, so at 32 px (it never meets the bug).
README_BACKBONES = ("resnet18", "resnet18:nostem", "resnet50", "convnext_tiny@32", "mobilenet_v3_small",
                    "efficientnet_b0", "regnet_y_400mf", "vit_b_16")  # fmt: skip

# Per fill value: the minimal case guarded, then two training steps of each encoder; one digest per line.
SCRIPT = """
import hashlib, sys, tempfile
from pathlib import Path
import torch
from torch import nn
from affssl import convguard, engine
from affssl.spec import load_spec

def digest(tensors):
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode()); h.update(tensors[k].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(64, 64, 3, stride=2, padding=1))
ref = nn.Sequential(nn.Conv2d(64, 64, 3, stride=2, padding=1))
ref.load_state_dict(model.state_dict())
found = convguard.protect(model, "0", [1], "auto", torch.bfloat16, torch.device("cpu"), channels=64)
x = torch.randn(32, 64, 1, 1)  # (B, C, 1, 1)
with torch.autocast("cpu", torch.bfloat16):
    model(x).float().sum().backward()
ref(x).sum().backward()
print("minimal", [f.name for f in found], torch.equal(model[0].weight.grad, ref[0].weight.grad),
      digest({"w": model[0].weight.grad}))

def fake_save(path, learner, optimizer, spec, summary, position=None, data_fingerprint=None):  # hash, not write
    if path.name == "last.safetensors":
        print(spec.backbone.name, summary["step"], digest(learner.state_dict()), flush=True)

engine.save_checkpoint = fake_save
for name in sys.argv[1:]:
    name, _, size = name.partition("@")
    name, _, stem = name.partition(":")
    sets = [f"backbone.name={name}", f"data.image_size_px={size or 16}", "data.limit=16", "train.batch_size=8",
            "train.epochs=1", "train.device=cpu", "method.proj_hidden=32", "method.proj_out=16",
            "affine.head_hidden=32", "optim.lr=0.003"] + (["backbone.cifar_stem=false"] if stem else [])
    engine.pretrain(load_spec("default", sets), Path(tempfile.mkdtemp()) / "run", show_progress=False)
"""


def conv(**kw) -> nn.Conv2d:
    return nn.Conv2d(8, 8, **{"kernel_size": 3, "stride": 2, "padding": 1, **kw})


def test_rule_takes_inputs_smaller_than_a_padded_stride():
    assert convguard.meets_bug(conv(), (1, 1))  # the minimal case
    assert convguard.meets_bug(conv(kernel_size=5, padding=2), (1, 1))  # mobilenet's stride-2 depthwise 5×5
    assert convguard.meets_bug(conv(stride=3), (2, 2)) and convguard.meets_bug(conv(stride=(1, 2)), (4, 1))
    assert not convguard.meets_bug(conv(), (2, 2))  # 2×2 inputs are fine
    assert not convguard.meets_bug(conv(stride=1), (1, 1))
    assert not convguard.meets_bug(conv(kernel_size=1, padding=0), (1, 1))  # a ResNet shortcut
    assert not convguard.meets_bug(conv(padding_mode="reflect"), (1, 1))


def test_probe_finds_mobilenets_stride_2_depthwise_at_16_px_only():
    torch.manual_seed(0)
    net = build_backbone(BackboneSpec(name="mobilenet_v3_small", cifar_stem=False), 16)
    found = convguard.probe(net, [16], prefix="backbone")
    assert "backbone.features.9.block.1.0" in [f.name for f in found]
    assert all(f.input_px == (1, 1) and f.crop_px == 16 for f in found)
    assert convguard.probe(net, [32, 64]) == []
    assert [f.crop_px for f in convguard.probe(net, [64, 16])] == [16] * len(found)  # every size of the list
    assert net.training  # the probe restores the mode


def test_guarded_layer_is_exact_fp32_and_the_rest_stays_bf16():
    torch.manual_seed(0)
    model = nn.Sequential(conv(), nn.Conv2d(8, 8, 1)).to(memory_format=torch.channels_last)
    ref = copy.deepcopy(model)
    found = convguard.protect(model, "", [1], "auto", torch.bfloat16, CPU, channels=8)
    assert [(f.name, f.input_px) for f in found] == [("0", (1, 1))]
    x = torch.randn(4, 8, 1, 1).contiguous(memory_format=torch.channels_last)  # (4, 8, 1, 1)
    with torch.autocast("cpu", torch.bfloat16):
        hidden = model[0](x)
        assert hidden.dtype == torch.float32 and model[1](hidden).dtype == torch.bfloat16
    hidden.sum().backward()
    ref[0](x).sum().backward()
    assert torch.equal(model[0].weight.grad, ref[0].weight.grad)
    twin = copy.deepcopy(model)  # the fp32 forward is bound to the copy, not to the original
    assert twin[0].forward.__self__ is twin[0]
    assert "_fp32" not in str(model.state_dict().keys())


def test_forcing_bf16_onto_such_a_layer_is_one_line_naming_it_and_the_fix():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1))
    with pytest.raises(UserError, match=r"cannot train 1 \(input 1×1 at 2 px crops\).*train\.precision=auto"):
        convguard.protect(model, "", [2], "bf16", torch.bfloat16, CPU)
    assert convguard.protect(model, "", [2], "fp32", None, CPU) == []  # fp32: nothing to guard
    assert convguard.protect(model, "", [2], "auto", torch.bfloat16, torch.device("meta")) == []  # CPU only


def test_a_crop_the_encoder_cannot_take_is_one_line():
    model = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Conv2d(8, 8, 2, stride=2), nn.Conv2d(8, 8, 2, stride=2))
    with pytest.raises(UserError, match=r"cannot take 8 px crops \(.*\); raise data\.image_size_px$"):
        convguard.probe(model, [16, 8])


def run_under(fill: str, names: tuple[str, ...]) -> subprocess.Popen:
    env = {**os.environ, "MALLOC_PERTURB_": fill, "AFFSSL_BUSY_SAMPLE_S": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *names], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_minimal_case_and_readme_backbones_are_identical_under_two_malloc_fills():
    procs = [run_under(fill, README_BACKBONES) for fill in ("165", "90")]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        outputs.append(out.splitlines())
    minimal = outputs[0][0].split()
    assert minimal[1:4] == ["['0']", "True", minimal[3]] and minimal[2] == "True"  # guarded, equal to fp32
    assert outputs[0] == outputs[1]  # no tensor read from unwritten memory
    names = [n.split("@")[0].split(":")[0] for n in README_BACKBONES]
    assert [line.split()[:2] for line in outputs[0][1:]] == [[n, "2"] for n in names]  # two steps each


# ---------------------------------------------------------------------------------------------
# The divergence line blames the lr only when the loss grew before the fault


def diverged_after(losses: list[float], precision: str = "bf16") -> str:
    guard = faults.DivergenceGuard(None, CPU, precision)
    for step, loss in enumerate(losses):
        guard.observe(step, {"loss": torch.tensor(loss)})
    return str(guard.error(lr=3e-4))


def test_a_steady_loss_that_breaks_at_once_does_not_blame_the_lr():
    line = diverged_after([5.0, 4.9, 4.8, float("nan")])
    assert "not finite at step 4" in line and "lower optim.lr" not in line
    assert "held steady before it (5 → 4.8), so the lr (now 0.0003) is an unlikely cause" in line
    assert "--set train.precision=fp32" in line
    assert "train.precision" not in diverged_after([5.0, float("inf")], precision="fp32")  # already fp32
    rising = diverged_after([5.0, 40.0, 900.0, float("nan")])
    assert "the loss rose from 5 to 900 before it; lower optim.lr (now 0.0003)" in rising


def test_weights_that_are_not_finite_are_named_and_the_lr_blamed_only_after_growth():
    learner = Learner(load_spec("default", ["backbone.width=4", "data.image_size_px=16"]))
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.1)
    with torch.no_grad():
        learner.backbone.conv1.weight[0, 0, 0, 0] = float("nan")
    guard = faults.DivergenceGuard(None, CPU, "bf16")
    for step in range(3):
        guard.observe(step, {"loss": torch.tensor(5.0)})
    with pytest.raises(faults.Diverged, match=r"after step 3 \(first: backbone\.conv1\.weight\).*unlikely cause"):
        check_finite(learner, optimizer, 3, guard)


def test_local_crops_are_probed_at_their_own_size():
    from affssl.engine import crop_sizes

    local = ["augment.local_crops=2", "augment.local_size_px=16"]
    spec = load_spec("default", ["backbone.name=mobilenet_v3_small", "data.image_size_px=32", *local])
    assert crop_sizes(spec) == [32, 16]
    assert crop_sizes(load_spec("default", ["data.image_size_px=32"])) == [32]
    assert crop_sizes(load_spec("default", ["data.image_size_px=32", "rotation.enabled=true"])) == [32, 16]  # E-SSL
    assert crop_sizes(load_spec("default", ["data.image_size_px=32", "rotation.enabled=true", *local])) == [32, 16]
    torch.manual_seed(0)
    net = build_backbone(spec.backbone, 32)
    found = convguard.probe(net, crop_sizes(spec), prefix="backbone")
    assert found and {f.crop_px for f in found} == {16}  # the global 32 px views never meet the bug; the 16 px crops do


def test_a_loss_that_breaks_on_the_second_step_says_what_the_first_was_and_which_term_broke():
    # The issue's `--set optim.lr=1e4`: "the loss rose from 5.961 to 5.961" when one step was all the history.
    guard = faults.DivergenceGuard(1e6, CPU, "fp32")
    guard.observe(0, {"loss_ssl": torch.tensor(5.96), "loss_affine": torch.tensor(0.4), "loss": torch.tensor(6.36)})
    guard.observe(1, {"loss_ssl": torch.tensor(5.5), "loss_affine": torch.tensor(6e20), "loss": torch.tensor(6e20)})
    line = str(guard.error(lr=1e4))
    assert "rose from" not in line and "the one step before it had loss 6.36" in line, line
    assert "loss_affine is the term that broke" in line and "lower optim.lr (now 10000)" in line, line
