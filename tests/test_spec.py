"""Specs: strict keys, the method union, dotted overrides, presets, resolved defaults."""

import pytest

from affssl.spec import (
    COMPONENTS,
    DEFAULT_AFFINE_WEIGHT,
    METHOD_SPECS,
    PRESETS,
    BarlowSpec,
    BYOLSpec,
    RunSpec,
    SpecError,
    load_spec,
    parse_value,
)


def test_defaults_resolve_weight_and_stem():
    spec = RunSpec()
    assert spec.affine.weight == 1.0 and spec.backbone.cifar_stem is True
    assert load_spec(None, ["method.name=barlow"]).affine.weight == 10.0  # paper §1.6
    assert load_spec(None, ["method.name=byol"]).affine.weight == 1.0
    assert load_spec(None, ["data.image_size_px=96"]).backbone.cifar_stem is False
    assert load_spec(None, ["method.name=barlow", "affine.weight=2.5"]).affine.weight == 2.5


@pytest.mark.parametrize("base", list(METHOD_SPECS))
def test_every_base_has_a_default_affine_weight(base):
    spec = load_spec(None, [f"method.name={base}"])
    assert isinstance(spec.method, METHOD_SPECS[base])
    assert spec.affine.weight == DEFAULT_AFFINE_WEIGHT[base]
    assert set(DEFAULT_AFFINE_WEIGHT) == set(METHOD_SPECS)
    assert {b: DEFAULT_AFFINE_WEIGHT[b] for b in ("vicreg", "mocov3", "simsiam")} == {
        "vicreg": 5.0,
        "mocov3": 1.0,
        "simsiam": 0.25,
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset):
    assert isinstance(load_spec(preset), RunSpec)


def test_paper_preset_numbers():
    spec = load_spec("paper")
    assert (spec.optim.name, spec.optim.lr, spec.optim.weight_decay) == ("adam", 3e-4, 1e-5)
    assert (spec.train.batch_size, spec.data.image_size_px, spec.backbone.name) == (256, 64, "resnet50")
    assert spec.affine.rotation_deg == 90 and spec.affine.translate_frac == 0.25
    assert spec.affine.scale_range == (0.7, 1.3) and spec.affine.shear_deg == 25
    assert spec.method.temperature == 0.5 and spec.affine.components == COMPONENTS


def test_method_union_picks_the_right_model():
    assert isinstance(load_spec(None, ["method.name=byol"]).method, BYOLSpec)
    assert isinstance(load_spec(None, ["method.name=barlow", "method.lambda_offdiag=0.01"]).method, BarlowSpec)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.epochs=-1", "train.epochs"),
        ("train.epochs='ten'", "train.epochs"),
        ("optim.lrr=0.1", "optim.lrr: unknown key"),
        ("affine.components=['spin']", "affine.components"),
        ("affine.components=[]", "affine.components"),
        ("method.name=moco", "unknown base method 'moco'"),
        ("method.temperature=0.1x", "method.temperature"),
        ("method.name=vicreg\0method.temperature=0.2", "method.temperature: unknown key"),
        ("method.name=mocov3\0method.momentum_base=1.5", "method.momentum_base: Input should be less"),
        ("notakey", "not key=value"),
    ],
)
def test_bad_values_name_the_field(override, fragment):
    with pytest.raises(SpecError, match=None) as info:
        load_spec(None, override.split("\0"))
    assert fragment in str(info.value)


def test_specs_are_frozen_and_round_trip_json():
    spec = load_spec("default", ["affine.components=['shear','scale']", "method.name=byol"])
    with pytest.raises(ValueError):
        spec.train.epochs = 3
    assert RunSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.affine.components == ("scale", "shear")


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("plain text") == "plain text"
    assert parse_value('"/data/x"') == "/data/x"


def test_toml_file_and_errors(tmp_path):
    good = tmp_path / "spec.toml"
    good.write_text('[method]\nname = "byol"\ntau_base = 0.99\n[train]\nepochs = 3\n')
    spec = load_spec(good, ["train.epochs=4"])
    assert spec.method.tau_base == 0.99 and spec.train.epochs == 4
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", ["[1]", "{a = 1}", "3"])
def test_method_name_of_another_type_is_a_spec_error(name):
    """Found by tests/test_fuzz.py: a list or table as method.name crashed the name lookup."""
    with pytest.raises(SpecError, match="unknown base method"):
        load_spec(None, [f"method.name={name}"])
