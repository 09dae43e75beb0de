"""The one exception type the CLI turns into a one-line message and exit code 2, and its disk-write form.

Raise `UserError` (or a subclass) for anything a person can fix: a bad spec, a missing file, a
corrupt image, a checkpoint of the wrong kind. Its message names the problem and the fix.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class UserError(Exception):
    """A problem in the user's input; the message says what is wrong and how to fix it."""


def write_failed(path: Path, err: Exception) -> UserError:
    """The one line for a file that could not be written (full disk, read-only folder): path, reason, free space."""
    path = Path(path)
    reason = getattr(err, "strerror", None) or str(err)
    where = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:,.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    return UserError(f"could not write {path} ({reason}; {free}); free some space or choose a writable --out")
