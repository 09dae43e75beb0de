"""What a run trains on, in two numbers: the count of the source's training images and a digest of the
files its storage reads (each one's path relative to the source, size and mtime).

The engine stores it in every checkpoint header (HEADER); `--resume` compares it with the data found
now. Different data under a resume used to be silent: the permutation, the steps per epoch and the
position inside an epoch all belong to the old count (steps went 5 → 5 → 2 → 2). A difference stops
the resume with one line (`DataChanged`, exit code 2), unless the caller allows it (`pretrain --resume
--allow-data-change`): then the run restarts the interrupted epoch on the new data and its steps go on
from the checkpoint's. Cheap: no image is read; the digest is of the file list the storage scans anyway.
A checkpoint written before the fingerprint existed has none and is not checked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from affssl.errors import UserError

HEADER = "data_fingerprint"  # the checkpoint header's key


class DataChanged(UserError):
    """The data differs from the data the checkpoint was trained on."""


@dataclass(frozen=True)
class Fingerprint:
    count: int  # training images of the source, before data.limit (bad ones included)
    sha256: str  # of the identity: (relative path, size, mtime_ns) of every file the storage reads

    def as_text(self) -> str:
        return json.dumps({"count": self.count, "sha256": self.sha256})


def of(identity: object, count: int) -> Fingerprint:
    """The fingerprint of a source's identity (any JSON-able list of file facts) and its training image count."""
    return Fingerprint(count, hashlib.sha256(json.dumps(identity).encode()).hexdigest())


def stored(text: str | None) -> Fingerprint | None:
    """The fingerprint a checkpoint header holds (None: none, or unreadable: not checked)."""
    try:
        value = json.loads(text) if text else None
        return Fingerprint(int(value["count"]), str(value["sha256"])) if value else None
    except (ValueError, KeyError, TypeError):
        return None


def check(before: Fingerprint | None, now: Fingerprint | None, source: str, allow: bool) -> bool:
    """Whether the data changed since `before` (False when either is unknown); DataChanged unless `allow`."""
    if before is None or now is None or before == now:
        return False
    if allow:
        return True
    what = (f"{before.count:,} → {now.count:,} training images" if before.count != now.count
            else f"the same {now.count:,} images, other files, sizes or mtimes")  # fmt: skip
    raise DataChanged(f"the data in {source} changed since the checkpoint was written ({what}); restore it, or pass "
                      "--allow-data-change to continue on the new data (the interrupted epoch starts over, steps go "
                      "on), or start a new run with another --out")  # fmt: skip
