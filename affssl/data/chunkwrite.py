"""An image folder's training split → JPEG bytes in litdata chunk files, written once (the chunks storage).

Layout: CACHE/chunks/<key>/ holds litdata's index.json and chunk-*.bin files, one item per readable
image ({"jpeg": bytes, "label": int, "crc": int}, in the folder's sorted order; crc is `item_crc`,
checked on every read: litdata stores no checksum), and affssl.json (the item count,
labels, classes, the images skipped as unreadable). The key is a sha256 of the source's identity
(every file's path, size and mtime), data.store_px, data.jpeg_quality and CHUNKS_FORMAT, so an edit
to the source or to those settings writes new chunks, as the tensor cache is invalidated. The folder
is written under a temporary name, .<key>.<host>.<pid>.tmp, and renamed into place: it exists only
once complete. A writer killed before the end (SIGKILL, OOM) leaves its temporary folder; the next
run on that host that uses chunks removes every one whose process is gone. A complete folder whose metadata was
damaged later (affssl.json or index.json deleted, truncated or edited) is found by `damage`, named in
one line, moved aside and written again from the source images.

Each image is decoded as the tensor cache decodes it (affssl.data.decode; unreadable ones are found
here); one whose short side is above data.store_px (unset: STORE_MAX_PX, 1024 px; storing a 6000 px
photo for 16–224 px crops only made every read slow) is resized (antialiased) to it, aspect kept, and
re-encoded at data.jpeg_quality, as is any image that is not a JPEG TorchCodec reads; a JPEG already
small enough is stored as its own bytes, less its Exif segments (the tensor cache ignores the Exif
orientation; TorchCodec would apply it). Decoding and encoding run in
data.workers loader processes; the items reach the writer in file order whatever their number.

Bad data: an image that cannot be read or decoded is skipped and counted; the run goes on unless
more than data.max_bad_frac of the images are bad (then nothing is kept and one line says so).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader
from torchcodec.decoders import decode_jpeg
from torchcodec.encoders import JpegEncoder
from torchvision.transforms.v2 import functional as TF

from affssl.data import dataset
from affssl.data import workers as loader_workers
from affssl.data.dataset import SHOW_BAD, DataError
from affssl.data.decode import JPEG_SIGNATURE, Entry, decode_bytes, without_exif
from affssl.errors import UserError

CHUNKS_FORMAT = 3  # bump when the stored items change, so old chunks are not reused (2: STORE_MAX_PX, 3: crc)
STORE_MAX_PX = 1024  # short side stored when data.store_px is unset: training crops are 16–224 px
META = "affssl.json"
INDEX = "index.json"  # litdata's
ABSENT = "absent"
CHUNK_BYTES = 64 << 20  # litdata's recommended chunk size for streaming
ENCODE_BATCH = 64  # files per loader item while writing
EXTRA = 'data.storage = "chunks" needs litdata: pip install "affssl[scale]"'


@dataclass(frozen=True)
class Plan:
    """What to write: the training files, their labels and where the chunks go."""

    files: list[Entry]
    labels: list[int] | None
    classes: tuple[str, ...]
    folder: Path  # CACHE/chunks/<key>
    store_px: int | None
    quality: int
    max_bad_frac: float


def item_crc(jpeg: bytes, label: int) -> int:
    """CRC-32 of an item's label and JPEG bytes: any flipped bit in either changes it."""
    return zlib.crc32(jpeg, zlib.crc32(label.to_bytes(8, "little", signed=True)))


def chunk_folder(root: Path, source: str, identity: object, store_px: int | None, quality: int) -> Path:
    blob = json.dumps([source, identity, store_px, quality, CHUNKS_FORMAT])
    return root / "chunks" / hashlib.sha256(blob.encode()).hexdigest()


def require_litdata() -> None:
    try:
        import litdata  # noqa: F401
    except ImportError:
        raise UserError(EXTRA) from None


def write(plan: Plan, workers: int, progress: bool) -> None:
    """Write plan.folder unless it is there; raises DataError when more than max_bad_frac of the images are bad."""
    from litdata.streaming.writer import BinaryWriter

    remove_dead_writers(plan.folder.parent)  # on every run: a killed writer's folder may be of another key
    problem = damage(plan.folder)
    if not problem:
        return
    if problem != ABSENT:
        _rebuild_note(plan.folder, problem)
    tmp = plan.folder.with_name(f".{plan.folder.name}.{os.uname().nodename}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        writer = BinaryWriter(str(tmp), chunk_bytes=CHUNK_BYTES)
        encoder = _Encoder(plan.files, plan.store_px or STORE_MAX_PX, plan.quality)
        loader = DataLoader(encoder, batch_size=ENCODE_BATCH, num_workers=workers, collate_fn=_as_list,
                            generator=torch.Generator(),  # its own: the global RNG seeds the weights
                            worker_init_fn=loader_workers.init_fn())  # fmt: skip
        bad, labels, count = [], [], 0
        with Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar:
            task = bar.add_task(f"writing chunks {plan.folder}", total=len(plan.files))
            for start, batch in zip(range(0, len(plan.files), ENCODE_BATCH), loader, strict=True):
                for k, (data, why) in enumerate(batch):
                    if data is None:
                        bad.append((plan.files[start + k][0], why))
                        continue
                    label = -1 if plan.labels is None else plan.labels[start + k]
                    writer[count] = {"jpeg": data, "label": label, "crc": item_crc(data, label)}
                    labels.append(label)
                    count += 1
                bar.advance(task, len(batch))
        check_bad(bad, len(plan.files), plan.max_bad_frac, plan.folder)
        writer.done()
        writer._merge_no_wait()  # index.json now; merge() would wait for every torchrun rank's part
        meta = {"format": CHUNKS_FORMAT, "count": count, "labels": labels if plan.labels is not None else None,
                "classes": list(plan.classes), "bad": len(bad), "bad_first": [p for p, _ in bad[:SHOW_BAD]],
                "store_px": plan.store_px, "jpeg_quality": plan.quality}  # fmt: skip
        (tmp / META).write_text(json.dumps(meta))
        try:
            tmp.rename(plan.folder)
        except OSError:  # another writer's complete folder got there first (a shared cache folder)
            if damage(plan.folder):
                raise
    except OSError as err:
        raise DataError(f"chunks could not be written to {plan.folder} ({err.strerror or err}); "
                        "free some space or set data.root to a writable folder") from None  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def damage(folder: Path) -> str:
    """What is wrong with a chunk folder's metadata: "" when whole, ABSENT when there is no folder."""
    if not folder.is_dir():
        return ABSENT
    found = {}
    for name in (META, INDEX):
        try:
            found[name] = json.loads((folder / name).read_text())
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, ValueError) as err:
            return f"{name} is unreadable ({type(err).__name__})"
    meta, index = found[META], found[INDEX]
    try:
        if meta["format"] != CHUNKS_FORMAT:
            return f"{META} has format {meta['format']}, this affssl writes {CHUNKS_FORMAT}"
        items = sum(int(c["chunk_size"]) for c in index["chunks"])
        if not all(isinstance(c["filename"], str) and int(c["chunk_bytes"]) >= 0 for c in index["chunks"]):
            return f"{INDEX} names its chunks wrongly"
        labels = meta["labels"]
        if items != meta["count"] or (labels is not None and len(labels) != items):
            return f"{INDEX} holds {items} items, {META} says {meta['count']}"
        if not (
            isinstance(meta["classes"], list) and isinstance(meta["bad"], int) and isinstance(meta["bad_first"], list)
        ):
            return f"{META} lacks a field"
    except (KeyError, TypeError, ValueError):
        return f"{META} or {INDEX} lacks a field"
    return ""


def _rebuild_note(folder: Path, problem: str) -> None:
    """Say it in one line, then move the damaged folder aside (atomic) and delete it, so it is written anew."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"note: the chunks in {folder} are damaged ({problem}); rebuilding them from the source images"
    )
    aside = folder.with_name(f".{folder.name}-damaged.{os.uname().nodename}.{os.getpid()}.tmp")
    try:
        folder.rename(aside)
    except FileNotFoundError:  # another process moved it first
        return
    shutil.rmtree(aside, ignore_errors=True)


def remove_dead_writers(chunks: Path) -> list[Path]:
    """Delete the temporary folders (.<key>.<host>.<pid>.tmp) of this host's writers whose process is gone."""
    host, removed = os.uname().nodename, []
    for entry in chunks.iterdir() if chunks.is_dir() else ():
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        owner, _, pid = name[1:-4].partition(".")[2].rpartition(".")
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:  # a zombie (killed, not yet reaped) writes no more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def check_bad(bad: list[tuple[str, str]], total: int, max_bad_frac: float, folder: Path) -> None:
    dataset.check_bad(bad, total, max_bad_frac, after=f"; no chunks were kept in {folder.parent}")


def _as_list(batch: list) -> list:
    return batch


class _Encoder(torch.utils.data.Dataset):
    """File index → (JPEG bytes, "") or (None, why it is unreadable); run in loader workers."""

    def __init__(self, files: list[Entry], store_px: int | None, quality: int):
        self.files, self.store_px, self.quality = files, store_px, quality

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[bytes | None, str]:
        path = self.files[i][0]
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as err:
            return None, err.strerror or str(err)
        own = None  # JPEG bytes training can decode as they are (Exif dropped, as the tensor cache decodes them)
        try:
            if data[:3] == JPEG_SIGNATURE:
                own = without_exif(data)
                try:
                    image = decode_jpeg(torch.frombuffer(bytearray(own), dtype=torch.uint8), mode="RGB")
                except RuntimeError:  # TorchCodec refuses it; PIL may read it: stored re-encoded
                    own, image = None, decode_bytes(data)
            else:
                image = decode_bytes(data)  # (3, h, w) uint8
        except ValueError as err:
            return None, str(err)
        if self.store_px is not None and min(image.shape[-2:]) > self.store_px:
            image = TF.resize(image, self.store_px, antialias=True)  # short side → store_px, aspect kept
        elif own is not None:
            return bytes(own), ""  # small enough: the file's own bytes
        return JpegEncoder(image.contiguous()).to_tensor(quality=self.quality).numpy().tobytes(), ""
