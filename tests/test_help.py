"""--help reads right: flags shown as flags, no help text eaten as markup or cut, ablate's help short."""

from __future__ import annotations

import pytest
import typer.rich_utils
from typer.testing import CliRunner

from affssl.cli import app

runner = CliRunner()
COMMANDS = [[], ["pretrain"], ["export"], ["ablate"], ["eval"], ["eval", "linear"], ["eval", "knn"], ["eval", "affine"]]


def help_text(command: list[str], columns: int) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.rich_utils, "MAX_WIDTH", columns)  # the terminal's width, as TERMINAL_WIDTH sets it
        result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "affssl")
def test_flags_show_no_type(command):
    text = help_text(command, 100)
    assert "--help" in text and "<bool>" not in text


def test_export_help_names_the_onnx_extra_and_the_default_encoder():
    text = " ".join(help_text(["export"], 100).split())
    assert "affssl[onnx]" in text and "affssl.load_backbone" in text
    assert "torchvision's ResNet" not in text


def test_components_are_listed_whole_at_80_columns():
    text = " ".join(help_text(["pretrain"], 80).replace("│", " ").split())
    assert "(rotation, translation, scale, shear)" in text


def test_ablate_help_is_short():
    assert len(help_text(["ablate"], 120).splitlines()) <= 60
    assert len(help_text(["ablate"], 80).splitlines()) <= 85


@pytest.mark.parametrize("command", [["pretrain"], ["ablate"], ["eval", "linear"]], ids=" ".join)
def test_set_shows_the_same_metavar_everywhere(command):
    text = help_text(command, 120)
    assert "KEY=VALUE" in text and "<list" not in text, text
