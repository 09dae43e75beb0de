"""affssl from Python: build a spec, pretrain, probe, export, and load the backbone into torchvision.

Run from the repository root (about a minute on 2 CPU cores):

    python examples/api_minimal.py
"""

from pathlib import Path

import torch
from safetensors.torch import load_file

import affssl
from affssl.backbones import torchvision_model
from affssl.engine import pretrain
from affssl.eval import evaluate_linear
from affssl.export import export
from affssl.spec import load_spec

out = Path("runs/api-example")
# The bundled CPU preset (digits, narrow ResNet-18) with BYOL + the affine module, 5 epochs.
spec = load_spec("default", ["method.name=byol", "train.epochs=5", "backbone.width=16"])
if out.exists():
    raise SystemExit(f"{out} exists; remove it to run the example again")
last = pretrain(spec, out)

result = evaluate_linear(last, trials=3)  # the paper's probe; writes runs/api-example/eval/
print(f"linear probe: {result['result']['top1_pct']:.2f} % ± {result['result']['ci95_pct']:.2f}")

# The backbone alone, with torchvision's key names: it loads strictly into torchvision's ResNet-18
# once the stem matches (width 16 ≠ torchvision's 64, so here we compare with affssl.load_backbone).
export(last, out / "backbone.safetensors")
backbone = affssl.load_backbone(out / "backbone.safetensors")
x = torch.rand(4, 3, spec.data.image_size_px, spec.data.image_size_px)
print("features:", tuple(backbone(x).shape))
if spec.backbone.width == 64:
    model = torchvision_model(spec.backbone)
    model.load_state_dict(load_file(out / "backbone.safetensors"), strict=True)
