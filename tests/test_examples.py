"""The examples run: examples/affine_in_your_loop.py with a few small steps, with and without its `# + affine` lines."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "affine_in_your_loop.py"
SMALL = ["--steps", "2", "--batch-size", "8", "--size-px", "8", "--device", "cpu"]


def test_affine_in_your_loop_prints_both_losses(capsys):
    runpy.run_path(str(EXAMPLE))["main"](SMALL)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["step", "1"], ["step", "2"]]
    assert all("ssl" in line and "affine" in line for line in lines)


def test_the_module_takes_at_most_five_marked_lines_and_the_loop_runs_without_them(capsys):
    source = EXAMPLE.read_text().splitlines()
    marked = [line for line in source if "# + affine" in line]
    assert 1 <= len(marked) <= 5
    plain = "\n".join(line for line in source if "# + affine" not in line)  # the same loop, plain SimCLR
    namespace: dict = {"__name__": "plain_simclr"}
    exec(compile(plain, str(EXAMPLE), "exec"), namespace)
    namespace["main"](SMALL)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("ssl" in line and "affine" not in line for line in lines)
