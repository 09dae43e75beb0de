"""The public block `affssl.AffineEstimation`: its options, its parts, and the engine's use of it.

Oracles: the block against the paper's pipeline written out from affssl.affine's pieces; the
Learner's loss and gradients against the block called by hand (torch.equal), against the
pre-block formula, and against values recorded from the code before the block existed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from affssl import affine, augment
from affssl.affine_block import AffineEstimation, AffineParts
from affssl.errors import UserError
from affssl.learner import Learner
from affssl.spec import AffineSpec, SpecError, load_spec

HEAD_KEYS = ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
             "1.num_batches_tracked", "3.weight", "3.bias"]  # fmt: skip


def tiny_encoder(feat_dim: int = 12) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(24, feat_dim))  # fmt: skip


def images(n: int = 8, size_px: int = 16, seed: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, size_px, size_px, generator=torch.Generator().manual_seed(seed))  # (n, 3, S, S)


def test_import_affssl_stays_light_and_exports_the_block():
    code = "import sys, affssl; assert 'torch' not in sys.modules; print(affssl.AffineEstimation.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AffineEstimation"


# ---------------------------------------------------------------------------------------------
# The block alone


OPTIONS = [
    {},
    {"components": ("rotation",)},
    {"components": ["shear", "translation"]},
    {"rotation_deg": 30.0, "translate_frac": 0.1, "scale_range": (0.9, 1.1), "shear_deg": 5.0},
    {"aggregation": "concat"},
    {"fill": "bounded"},
    {"interpolation": "bilinear"},
    {"head_hidden": 7},
    {"target": "standardized"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_block_with_each_option_matches_the_pipeline_written_out(options):
    spec = AffineSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    encoder, view = tiny_encoder(), images()
    torch.manual_seed(1)
    aff = AffineEstimation(12, **options)
    assert aff.spec == spec  # options build the AffineSpec, defaults and all
    torch.manual_seed(1)
    ref_head = affine.build_head(spec, 12)
    assert list(aff.state_dict()) == HEAD_KEYS
    assert all(
        torch.equal(a, b) for a, b in zip(aff.state_dict().values(), ref_head.state_dict().values(), strict=True)
    )

    h = encoder(view)  # (8, 12)
    parts = aff(encoder, view, h, torch.Generator().manual_seed(5), return_parts=True)
    phi = affine.sample(8, spec, 16, torch.Generator().manual_seed(5))  # (8, 6)
    warped = affine.warp(view, phi, spec)
    pred = ref_head(affine.aggregate(h, encoder(warped), spec.aggregation))  # (8, k)
    target = affine.targets(phi, spec, 16)
    assert isinstance(parts, AffineParts)
    assert torch.equal(parts.phi, phi) and torch.equal(parts.warped, warped) and torch.equal(parts.target, target)
    assert torch.equal(parts.pred, pred) and parts.pred.shape == (8, affine.target_dim(spec))
    assert torch.equal(parts.loss, ((pred - target) ** 2).mean())
    loss = aff(encoder, view, h, torch.Generator().manual_seed(5))  # the simple call: the same scalar
    assert loss.ndim == 0 and loss.dtype == torch.float32 and torch.equal(loss, parts.loss)
    torch.testing.assert_close(aff.decode(parts.target, 16), phi)  # targets decode back to φ


def test_spec_argument_equals_keyword_options_and_bad_options_are_one_line_errors():
    spec = AffineSpec(aggregation="concat", components=("scale",))
    assert AffineEstimation(8, spec=spec).spec == AffineEstimation(8, aggregation="concat", components=["scale"]).spec
    with pytest.raises(UserError, match="spec= and fill; pass one or the other"):
        AffineEstimation(8, spec=spec, fill="bounded")
    with pytest.raises(SpecError, match=r"^invalid AffineEstimation option: rotation_deg: .*180$"):
        AffineEstimation(8, rotation_deg=200)
    with pytest.raises(SpecError, match="components"):
        AffineEstimation(8, components=[])
    with pytest.raises(UserError, match="feat_dim must be a positive int"):
        AffineEstimation(0)


def test_without_a_generator_phi_follows_torch_manual_seed():
    encoder, view = tiny_encoder(), images()
    aff = AffineEstimation(12).eval()  # eval: BatchNorm running stats stay, so calls compare
    h = encoder(view)
    torch.manual_seed(7)
    a = aff(encoder, view, h, return_parts=True)
    b = aff(encoder, view, h, return_parts=True)
    torch.manual_seed(7)
    a_again = aff(encoder, view, h, return_parts=True)
    assert torch.equal(a.phi, a_again.phi) and torch.equal(a.loss, a_again.loss)
    assert not torch.equal(a.phi, b.phi)  # each call draws new φ


def test_block_on_torchvision_resnet18():
    torch.manual_seed(0)
    encoder = torchvision.models.resnet18(weights=None)
    encoder.fc = nn.Identity()
    aff = AffineEstimation(feat_dim=512)
    view = images(4, 32)
    h = encoder(view)  # (4, 512)
    loss = aff(encoder, view, h, torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert encoder.conv1.weight.grad.abs().sum() > 0 and aff.mlp[0].weight.grad.abs().sum() > 0
    assert list(aff.state_dict()) == HEAD_KEYS and aff.mlp[3].out_features == 6


# ---------------------------------------------------------------------------------------------
# The engine's use of the block

TINY = ["backbone.width=4", "data.image_size_px=8", "method.proj_hidden=16", "method.proj_out=8",
        "affine.head_hidden=16"]  # fmt: skip
CONFIGS = {
    "simclr": [],
    "projector": ["affine.location=projector"],
    "views2": ["affine.views=2"],
    "concat_bounded": ["affine.aggregation=concat", "affine.fill=bounded", "affine.interpolation=bilinear"],
    "byol_proj_views2": ["method.name=byol", "affine.location=projector", "affine.views=2", "method.pred_hidden=16"],
    "barlow_std": ["method.name=barlow", "affine.target=standardized", "affine.components=['scale','shear']"],
}
# (loss, loss_affine) of Learner.forward on these configs, recorded from the code before the block (39860bf).
RECORDED = {
    "simclr": (2.955393075942993, 0.349313884973526),
    "projector": (3.1055479049682617, 0.4994688332080841),
    "views2": (3.4893898963928223, 0.8833107948303223),
    "concat_bounded": (3.1046605110168457, 0.49858129024505615),
    "byol_proj_views2": (5.128333568572998, 1.3708271980285645),
    "barlow_std": (12.573299407958984, 0.6751875281333923),
}


def learner_of(name: str) -> Learner:
    torch.manual_seed(0)
    return Learner(load_spec("default", TINY + CONFIGS[name]))


def uint8_images() -> torch.Tensor:
    return torch.randint(0, 256, (8, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def by_hand(learner: Learner, x: torch.Tensor, old_formula: bool) -> torch.Tensor:
    """The Learner's step written out in a user's loop: the block called directly, or the pre-block formula."""
    spec = learner.spec
    g_views, g_affine = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    v1, v2 = augment.views(x, spec.augment, g_views)
    h1, h2 = learner.backbone(v1), learner.backbone(v2)
    out = learner.method(h1, h2, v1, v2)
    loss_affine = 0
    for view, h, z in ((v1, h1, out.z1), (v2, h2, out.z2))[: spec.affine.views]:
        projector = spec.affine.location == "projector"
        if not old_formula:
            encoder = (lambda v: learner.method.embed(learner.backbone(v))) if projector else learner.backbone
            loss_affine = loss_affine + learner.head(encoder, view, z if projector else h, g_affine)
            continue
        phi = affine.sample(view.shape[0], spec.affine, view.shape[-1], g_affine)
        h_warped = learner.backbone(affine.warp(view, phi, spec.affine))
        if projector:
            h, h_warped = z, learner.method.embed(h_warped)
        pred = learner.head.mlp(affine.aggregate(h, h_warped, spec.affine.aggregation))
        loss_affine = loss_affine + affine.affine_loss(pred.float(), affine.targets(phi, spec.affine, view.shape[-1]))
    return out.loss + spec.affine.weight * loss_affine


@pytest.mark.parametrize("name", list(CONFIGS))
def test_learner_loss_and_gradients_equal_the_block_called_directly(name):
    x = uint8_images()
    engine = learner_of(name)
    loss, parts = engine(x, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    loss.backward()
    assert (loss.item(), parts["loss_affine"].item()) == pytest.approx(RECORDED[name], rel=1e-5)
    for old_formula in (False, True):
        user = learner_of(name)
        loss_user = by_hand(user, x, old_formula)
        loss_user.backward()
        assert torch.equal(loss_user, loss)
        grads, grads_user = gradients(engine), gradients(user)
        assert grads.keys() == grads_user.keys() and any(k.startswith("head.") for k in grads)
        assert all(torch.equal(grads[k], grads_user[k]) for k in grads)


def test_learner_head_keys_are_the_mlp_keys():
    learner = learner_of("simclr")
    assert isinstance(learner.head, AffineEstimation)
    assert [k for k in learner.state_dict() if k.startswith("head.")] == [f"head.{k}" for k in HEAD_KEYS]
    assert learner.param_counts()["head"] == sum(p.numel() for p in learner.head.mlp.parameters())
