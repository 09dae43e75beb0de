"""README.md and docs/*.md: the README fits on a page, its Quickstart is the two commands, every link
resolves, and every affssl command shown parses with the CLI as it is (options, types, ranges)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from affssl.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
QUICKSTART = [
    "pip install . && affssl pretrain --out runs/quickstart && affssl eval linear runs/quickstart/last.safetensors",
    'pip install ".[dev]" && pytest',
]
SHELL_ENDS = {">", ">>", "|", "&&", ";", "2>&1"}


def test_readme_fits_on_a_page_and_its_quickstart_is_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    quickstart = text.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", quickstart, re.S).group(1)
    assert block.splitlines() == QUICKSTART


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def commands(text: str) -> list[list[str]]:
    """affssl command lines of fenced bash blocks and inline code, as argument lists (shell parts cut off)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        found += block.replace("\\\n", " ").splitlines()
    found += [" ".join(span.split()) for span in re.findall(r"`(affssl [^`]+)`", text)]
    # indented code blocks too (a command that runs on into the next sentence has extra arguments there)
    found += [m.replace("\\\n", " ") for m in re.findall(r"^    (affssl (?:[^\n]*\\\n)*[^\n]*)", text, re.M)]
    out = []
    for line in found:
        for part in re.split(r"&&|;", line.split(" #")[0]):
            if not part.strip().startswith("affssl "):
                continue  # another program's line (a `python -c "…; …"` is no affssl command)
            words = shlex.split(part)
            if not words or words[0] != "affssl" or any(w in ("…", "...", "N", "COMMAND") for w in words):
                continue
            cut = next((i for i, w in enumerate(words) if w in SHELL_ENDS), len(words))
            out.append(words[1:cut])
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_affssl_command_shown_parses(page):
    root = typer.main.get_command(app)
    shown = commands(page.read_text())
    for args in shown:
        command, rest = root.commands[args[0]], args[1:]
        if args[0] == "eval":
            if len(args) < 2:
                continue  # `affssl eval` named in prose
            command, rest = command.commands[args[1]], args[2:]
        if not rest:
            continue  # a command named in prose, not a command line
        command.make_context(" ".join(args[:2]), list(rest))  # raises on an unknown option or a bad value
    assert shown or page.name != "README.md"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_script_shown_exists_and_takes_its_flags(page):
    text = page.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    lines += [" ".join(span.split()) for span in re.findall(r"`(python [^`]+)`", text)]
    checked = 0
    for line in lines:
        for command in line.split("&&"):
            script = re.search(r"python ((?:benchmarks|examples)/\w+\.py)", command)
            if script:
                path = ROOT / script.group(1)
                source = path.read_text()  # with the sibling modules it imports its options from
                siblings = [path.parent / f"{name}.py" for name in re.findall(r"^from (\w+) import", source, re.M)]
                source += "".join(sibling.read_text() for sibling in siblings if sibling.exists())
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command.split(" #")[0]):
                    negated = "--" + flag.removeprefix("--no-")  # argparse.BooleanOptionalAction's --no-X
                    assert f'"{flag}"' in source or f'"{negated}"' in source, f"{page.name}: {script.group(1)}: {flag}"
                    checked += 1
    assert checked or page.name not in ("performance.md", "results.md")
