"""Files written whole or not at all: a temp file beside the destination, renamed into place, with the umask.

`tempfile.mkstemp` creates its file with mode 0600 (and safetensors ≥ 0.8 writes its files through
a 0600 temp file of its own), and `os.replace` keeps that mode, so checkpoints, exports and records
came out `-rw-------`. Here the temp file is created with mode 0666 and O_EXCL, so the kernel
applies the process's umask exactly as for `open(path, "w")`; that mode is put back after the
writer has run, whatever the writer did to the file, and only then is the file renamed into place.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ATTEMPTS = 100


def temp_beside(path: Path) -> Path:
    """Create an empty, uniquely named `.NAME.XXXXXXXX.tmp` in `path`'s folder (mode 0666 & ~umask); returns it.

    Raises OSError as `open` would (missing or read-only folder).
    """
    path = Path(path)
    for _ in range(ATTEMPTS):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temp name beside {path}")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temp file beside `path` to write; on success it takes the umask's mode and replaces `path`.

    On any exception the temp file is removed and `path` is left as it was.
    """
    tmp = temp_beside(path)
    try:
        umask_mode = stat.S_IMODE(tmp.stat().st_mode)
        yield tmp
        os.chmod(tmp, umask_mode)  # the writer may have replaced the file with a 0600 one
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_png(fig, path: str | Path, dpi: int) -> Path:
    """A matplotlib figure saved as a PNG at path (parent folders made), whole or not at all; an OSError
    becomes the one-line UserError of affssl.errors.write_failed."""
    from affssl.errors import write_failed

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    except OSError as err:
        raise write_failed(path, err) from None
    return path
