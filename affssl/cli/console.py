"""Where the CLI prints, and how a person's mistake ends: one line on stderr and exit code 2.

Only typer's API is used: typer ≥ 0.29 vendors click (`typer._click`) and no longer installs it.

`--debug` (or AFFSSL_DEBUG=1) shows the traceback instead; the app's callback sets `debug`.
"""

from __future__ import annotations

import os
from functools import wraps
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from affssl.errors import UserError

out = Console()
err = Console(stderr=True)
debug = {"on": os.environ.get("AFFSSL_DEBUG") == "1"}


def friendly(command):
    """Turn UserError into one line and exit code 2 (traceback only with --debug)."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            if debug["on"]:
                raise
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 2)) from None

    return wrapper


def _flags_without_type(command: TyperCommand | TyperGroup, ctx: typer.Context) -> None:
    """Blank the type column of flags: typer ≥ 0.29 shows `<bool>` for them, as if they took a value."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class Command(TyperCommand):
    """A command whose --help shows flags as flags (no `<bool>`)."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:  # formatter: click's HelpFormatter
        _flags_without_type(self, ctx)
        super().format_help(ctx, formatter)


class Group(TyperGroup):
    """A command group whose --help shows flags as flags (no `<bool>`)."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:  # formatter: click's HelpFormatter
        _flags_without_type(self, ctx)
        super().format_help(ctx, formatter)
