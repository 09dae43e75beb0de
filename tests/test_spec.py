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


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("optim.lrr=0.1", "did you mean optim.lr?"),  # a misspelling
        ("train.lr=0.1", "did you mean optim.lr?"),  # the right name in another section
        ("train.batchsize=8", "did you mean train.batch_size?"),
        ("trian.epochs=3", "did you mean train?"),  # an unknown section
        ("method.temperatur=0.2", "did you mean method.temperature?"),
    ],
)
def test_an_unknown_key_gets_the_closest_field(override, suggestion):
    with pytest.raises(SpecError) as info:
        load_spec(None, [override])
    assert f"unknown key; {suggestion}" in str(info.value)


def test_an_unknown_key_without_a_close_field_gets_no_guess():
    with pytest.raises(SpecError) as info:
        load_spec(None, ["method.name=vicreg", "method.temperature=0.2"])  # SimCLR's, not VICReg's: no guess
    assert "method.temperature: unknown key (every field" in str(info.value)


def test_an_error_in_a_spec_file_names_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[train]\nepochz = 3\n")
    for overrides in ([], ["train.epochs=2"]):
        with pytest.raises(SpecError, match=f"^{path}: invalid spec: train.epochz: unknown key"):
            load_spec(path, overrides)
    path.write_text("[train]\nepochs = 3\n")
    with pytest.raises(SpecError) as info:  # the override's error, not the file's
        load_spec(path, ["optim.lrr=1"])
    assert str(info.value).startswith("invalid spec: optim.lrr")


@pytest.mark.parametrize("name", ["[1]", "{a = 1}", "3"])
def test_method_name_of_another_type_is_a_spec_error(name):
    """Found by tests/test_fuzz.py: a list or table as method.name crashed the name lookup."""
    with pytest.raises(SpecError, match="unknown base method"):
        load_spec(None, [f"method.name={name}"])


PROTOCOL = """
[optim]
lr = 2e-3
[train]
epochs = 3
[bases.byol]
optim.lr = 1e-3
method.pred_lr_scale = 10
"""


def test_a_base_table_applies_to_its_base_only(tmp_path):
    from affssl.cli.options import resolve_spec

    protocol = tmp_path / "protocol.toml"
    protocol.write_text(PROTOCOL)
    byol = resolve_spec(str(protocol), "byol", [])
    # Oracle: the same spec written out by hand as overrides.
    assert byol == load_spec(None, ["method.name=byol", "optim.lr=1e-3", "method.pred_lr_scale=10", "train.epochs=3"])
    assert resolve_spec(str(protocol), "simclr", []) == load_spec(None, ["optim.lr=2e-3", "train.epochs=3"])
    assert resolve_spec(str(protocol), "barlow", []).optim.lr == 2e-3
    assert load_spec(protocol, ["method.name=byol"]).optim.lr == 1e-3  # chosen by --set too, not only --base


def test_the_command_line_wins_over_a_base_table_and_can_edit_it(tmp_path):
    from affssl.cli.options import resolve_spec

    protocol = tmp_path / "protocol.toml"
    protocol.write_text(PROTOCOL)
    assert resolve_spec(str(protocol), "byol", ["optim.lr=5e-4"]).optim.lr == 5e-4
    edited = resolve_spec(str(protocol), "byol", ["bases.byol.method.tau_base=0.99", "bases.byol.optim.lr=3e-3"])
    assert (edited.method.tau_base, edited.optim.lr, edited.method.pred_lr_scale) == (0.99, 3e-3, 10)
    assert resolve_spec(str(protocol), "simclr", ["bases.simclr.method.temperature=0.2"]).method.temperature == 0.2


@pytest.mark.parametrize(
    "table, fragment",
    [
        ("[bases.byl]\noptim.lr = 1e-3", r"\[bases.byl\]: unknown base method"),
        ("[bases.barlow]\noptim.lrr = 1e-3", r"\[bases.barlow\]: invalid spec: optim.lrr: unknown key"),
        ("[bases.barlow]\nmethod.tau_base = 0.9", r"\[bases.barlow\]: invalid spec: method.tau_base: unknown key"),
        ("[bases.byol]\nmethod.name = 'simclr'", r"\[bases.byol\] sets its own base"),
        ("[bases]\nbyol = 3", "bases.byol must be a table"),
        ("bases = 3", "bases must be a table"),
    ],
)
def test_a_bad_base_table_is_an_error_on_any_run_of_the_file(tmp_path, table, fragment):
    protocol = tmp_path / "protocol.toml"
    protocol.write_text(table)
    with pytest.raises(SpecError, match=fragment):
        load_spec(protocol)  # a simclr run: the broken table is another base's


def test_ablate_plans_each_base_with_its_table(tmp_path):
    from affssl import ablate as ab
    from affssl.cli.options import resolve_spec

    protocol = tmp_path / "protocol.toml"
    protocol.write_text(PROTOCOL)
    ablation = ab.make_ablation(default_base="simclr", first_seed=0, bases="simclr,byol", components="scale",
                                subsets="together", floor=True, match_time=True)  # fmt: skip
    planned = ab.plan(ablation, lambda base, extra: resolve_spec(str(protocol), base, extra))
    lr = {(r.variant.name, r.seed): r.spec.optim.lr for r in planned}
    assert lr == {("simclr/floor", 0): 2e-3, ("simclr/base", 0): 2e-3, ("simclr/affine-scale", 0): 2e-3,
                  ("simclr/base-equal-time", 0): 2e-3, ("byol/floor", 0): 1e-3, ("byol/base", 0): 1e-3,
                  ("byol/affine-scale", 0): 1e-3, ("byol/base-equal-time", 0): 1e-3}  # fmt: skip
    assert all(r.spec.method.pred_lr_scale == 10 for r in planned if r.variant.base == "byol")
