"""The `affssl` command line: parse → load and validate the spec → call one library function → print.

One module per command (pretrain, evaluate, export, ablate) over two shared ones: options (the
flags and the spec they resolve to) and console (printing, and the one-line error wrapper).
Errors a person can fix (`UserError`) end with one line on stderr and exit code 2; `--debug`
(or AFFSSL_DEBUG=1) shows the traceback instead. Torch is imported inside the commands, so
`affssl --help` starts fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from affssl import cpus, hostmem
from affssl.cli import ablate, console, evaluate, export, pretrain

app = typer.Typer(
    cls=console.Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Self-supervised pretraining with affine transformation estimation (Torpey & Klein, arXiv 2402.09071).",
)
app.command(cls=console.Command)(pretrain.pretrain)
app.add_typer(evaluate.app, name="eval")
app.command("export", cls=console.Command)(export.export_backbone)
app.command(cls=console.Command)(ablate.ablate)


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (also after a command's name).")]


@app.callback()
def _options(debug: DebugOpt = False) -> None:
    console.debug["on"] = debug or os.environ.get("AFFSSL_DEBUG") == "1"


def main() -> None:
    hostmem.hold_collection()  # each command turns it back on once torch is imported (see affssl.hostmem)
    cpus.mark_window()  # the busy line's sample can start here: importing doubles as its half second
    try:
        app()
    except KeyboardInterrupt:
        console.err.print("interrupted")
        sys.exit(130)
    finally:
        hostmem.exiting()
