"""The precision policy: what `auto` picks per device, and the parts that stay fp32 under bf16 autocast."""

from pathlib import Path

import pytest
import torch

from affssl import affine, augment, precision
from affssl.backbones import build_backbone
from affssl.errors import UserError
from affssl.methods.barlow import barlow_loss
from affssl.methods.byol import byol_loss
from affssl.methods.simclr import nt_xent
from affssl.spec import AffineSpec, AugmentSpec, TrainSpec
from affssl.spec.backbone import BackboneSpec

CPU = torch.device("cpu")


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 avx2 {flags}\n\n")
    return path


@pytest.mark.parametrize(("flags", "native"), [("avx512f", False), ("avx512f avx512_bf16", True), ("amx_bf16", True)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    assert precision.cpu_has_native_bf16(cpuinfo(tmp_path, flags)) is native
    assert precision.cpu_has_native_bf16(tmp_path / "absent") is False


def test_auto_is_bf16_on_cuda_and_native_cpus_else_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve("auto", "auto", CPU).dtype == torch.bfloat16
    assert precision.resolve("auto", "auto", torch.device("cuda")).dtype == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve("auto", "auto", CPU).dtype is None
    assert precision.resolve("bf16", "auto", CPU).dtype == torch.bfloat16  # forced
    assert precision.resolve("fp32", "auto", torch.device("cuda")).dtype is None
    assert precision.resolve("fp32", "auto", CPU).memory_format == torch.channels_last
    assert precision.resolve("fp32", "contiguous", CPU).memory_format == torch.contiguous_format


def test_specs_written_before_the_policy_still_load():
    assert TrainSpec.model_validate({"amp": True, "channels_last": True}).precision == "auto"
    old = TrainSpec.model_validate({"amp": False, "channels_last": False})
    assert (old.precision, old.memory_format) == ("fp32", "contiguous")


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_views_and_warp_are_fp32_under_autocast():
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    spec = AugmentSpec()
    ref = augment.views(x, spec, torch.Generator().manual_seed(0))
    with bf16():
        got = augment.views(x, spec, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) and b.dtype == torch.float32 for a, b in zip(ref, got, strict=True))
    aspec = AffineSpec()
    phi = affine.sample(6, aspec, 16, torch.Generator().manual_seed(1))
    with bf16():
        warped = affine.warp(ref[0], phi, aspec)
    assert warped.dtype == torch.float32 and torch.equal(warped, affine.warp(ref[0], phi, aspec))


@pytest.mark.parametrize(
    "loss",
    [
        lambda a, b: nt_xent(a, b, 0.5),
        lambda a, b: byol_loss(a, b, b.flip(0), a.flip(0)),
        lambda a, b: barlow_loss(a, b, 5e-3),
        lambda a, b: affine.affine_loss(a, b),
    ],
)
def test_losses_compute_in_fp32_under_autocast(loss):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    ref = loss(z1, z2)
    with bf16():
        got = loss(z1.bfloat16(), z2.bfloat16())  # the embeddings as a bf16 projector leaves them
    assert got.dtype == torch.float32
    assert torch.equal(got, loss(z1.bfloat16().float(), z2.bfloat16().float()))  # only the inputs were rounded
    assert torch.allclose(got, ref, rtol=0.05, atol=0.02)


def test_features_follow_the_policy_and_cache_apart(tmp_path):
    from affssl.backbones import build_backbone
    from affssl.eval.features import extract
    from affssl.spec import BackboneSpec

    torch.manual_seed(0)
    backbone = build_backbone(BackboneSpec(width=8, cifar_stem=True), 16)
    x = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    fp32 = extract(backbone, x, 4, CPU, precision_name="fp32")
    bf16 = extract(backbone, x, 4, CPU, precision_name="bf16")
    assert fp32.dtype == bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)
    assert torch.allclose(fp32, bf16, rtol=0.05, atol=0.05 * fp32.abs().max().item())


def test_cpu_fp32_training_avoids_channels_last_for_narrow_strided_pointwise_convs():
    """torch 2.14 corrupts the heap in that layer's weight gradient on AVX2 CPUs (fp32, channels_last, < 8 inputs)."""
    narrow, wide = (build_backbone(BackboneSpec(width=w), 16) for w in (4, 8))
    assert precision.narrow_strided_pointwise_convs(narrow) == ["layer2.0.downsample.0"]
    assert precision.narrow_strided_pointwise_convs(wide) == []
    assert precision.resolve("fp32", "auto", CPU, trained=narrow).memory_format == torch.contiguous_format
    assert precision.resolve("fp32", "auto", CPU, trained=wide).memory_format == torch.channels_last
    assert precision.resolve("bf16", "auto", CPU, trained=narrow).memory_format == torch.channels_last
    assert precision.resolve("fp32", "auto", torch.device("cuda"), trained=narrow).memory_format == torch.channels_last
    with pytest.raises(UserError, match=r"layer2\.0\.downsample\.0 .*memory_format=auto or contiguous"):
        precision.resolve("fp32", "channels_last", CPU, trained=narrow)
