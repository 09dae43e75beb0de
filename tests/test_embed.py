"""`affssl eval embed`: a 2-D map of the test features coloured by class, drawn into a PNG."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from affssl.cli import app
from affssl.eval.embed import DPI, FIG_IN, evaluate_embed, layout

SIZE_PX = (round(FIG_IN[0] * DPI), round(FIG_IN[1] * DPI))


def test_map_png_beside_the_checkpoint_with_its_record(tiny_checkpoint):
    record = evaluate_embed(tiny_checkpoint, method="tsne", points=60, device="cpu", cache=False)
    png = tiny_checkpoint.parent / "eval" / "embed-digits.png"
    assert record["result"] == {"png": str(png), "method": "tsne", "points": 60, "normalised": True}
    assert Image.open(png).size == SIZE_PX == (800, 650)
    assert json.loads((tiny_checkpoint.parent / "eval" / "embed-digits.json").read_text())["protocol"] == "embed"


def test_cli_out_and_the_same_map_for_the_same_seed(tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(app, ["eval", "embed", str(tiny_checkpoint), "--points", "40", "--method", "tsne",
                                      "--device", "cpu", "--out", str(tmp_path / "map.png")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "map.png (tsne, 40 test images of digits)" in " ".join(result.output.split())
    assert Image.open(tmp_path / "map.png").size == SIZE_PX
    h = torch.randn(30, 16, generator=torch.Generator().manual_seed(0))  # (n, F)
    a, b = layout(h, "tsne", seed=3), layout(h, "tsne", seed=3)
    assert a.shape == (30, 2) and np.array_equal(a, b)


def test_umap_without_umap_learn_is_one_line(tiny_checkpoint):
    if importlib.util.find_spec("umap") is not None:
        pytest.skip("umap-learn is installed")
    result = CliRunner().invoke(app, ["eval", "embed", str(tiny_checkpoint), "--method", "umap"])
    assert result.exit_code == 2 and "pip install umap-learn" in result.output and "Traceback" not in result.output


def test_umap_map(tiny_checkpoint, tmp_path):
    pytest.importorskip("umap")
    record = evaluate_embed(tiny_checkpoint, method="auto", points=40, device="cpu", out=tmp_path / "u.png")
    assert record["result"]["method"] == "umap" and Image.open(tmp_path / "u.png").size == SIZE_PX


def test_a_small_map_has_markers_one_can_see(tmp_path):
    # The issue: at 100 points the map's dots were too small to see (4 pt², about 3 px across at 100 dpi).
    from affssl.eval.embed import draw

    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)  # 100 points, none overlapping
    draw(grid, None, (), "100 points", tmp_path / "map.png")
    grey = np.asarray(Image.open(tmp_path / "map.png").convert("L"))  # (650, 800)
    inside = grey[52:610, 40:600]  # within the axes' frame (axes at 0.04, 0.05, 0.72 × 0.88 of 800 × 650 px)
    assert (inside < 200).sum() / 100 >= 25  # px² of ink per dot: about a 6 px disc each
