"""The examples run: affine_in_your_loop.py and objectives_in_your_loop.py with a few small steps, with and without
their marked lines."""

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


OBJECTIVES_EXAMPLE = EXAMPLE.with_name("objectives_in_your_loop.py")
TAGS = ("augself", "rotation", "care")
OBJECTIVES_SMALL = ["--steps", "1", "--batch-size", "32", "--size-px", "8", "--device", "cpu"]  # 2 images a chunk


def test_objectives_in_your_loop_prints_each_loss(capsys):
    runpy.run_path(str(OBJECTIVES_EXAMPLE))["main"](OBJECTIVES_SMALL)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and all(f" {name} " in lines[0] for name in ("ssl", *TAGS)), lines
    assert float(lines[0].split("care ")[1].split()[0]) > 0  # chunks of two images: CARE has pairs to compare


def test_each_objective_takes_four_marked_lines_and_the_loop_runs_without_them(capsys):
    source = OBJECTIVES_EXAMPLE.read_text().splitlines()
    for tag in TAGS:
        marked = [line for line in source if f"# + {tag}" in line]
        assert len(marked) == 4, (tag, marked)
        without = "\n".join(line for line in source if f"# + {tag}" not in line)
        compile(without, str(OBJECTIVES_EXAMPLE), "exec")  # one objective removed alone still reads as Python
    plain = "\n".join(line for line in source if not any(f"# + {tag}" in line for tag in TAGS))
    namespace: dict = {"__name__": "plain_simclr"}
    exec(compile(plain, str(OBJECTIVES_EXAMPLE), "exec"), namespace)
    namespace["main"](OBJECTIVES_SMALL)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "ssl" in lines[0] and not any(tag in lines[0] for tag in TAGS)


def test_every_example_spec_loads_strictly_and_the_study_in_its_header_plans(tmp_path):
    """Each examples/*.toml is a valid spec, and the `affssl ablate` command its comments give plans (--dry-run)."""
    import shlex

    from typer.testing import CliRunner

    from affssl.cli import app
    from affssl.spec import load_spec

    for spec_file in sorted(EXAMPLE.parent.glob("*.toml")):
        load_spec(spec_file)
        lines = spec_file.read_text().splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("#   affssl ablate")), None)
        if start is None:
            continue
        command = ""
        for line in lines[start:]:
            command += line.lstrip("# ").rstrip("\\").strip() + " "
            if not line.endswith("\\"):
                break
        argv = shlex.split(command)[1:]
        argv[argv.index("--out") + 1] = str(tmp_path / spec_file.stem)
        result = CliRunner().invoke(app, [*argv, "--dry-run"], catch_exceptions=False)
        assert result.exit_code == 0 and " runs into " in result.output, (spec_file.name, result.output)
