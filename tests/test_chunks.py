"""The chunks storage: written once, bad images skipped, truncated chunks named, exact resume, auto's choice.

Tiny generated folders of JPEGs (a few dozen, 12–28 px) keep each run to a few seconds; the reference
for every resume is the same spec trained without a stop ("exact": torch.equal on every tensor).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

pytest.importorskip("litdata")

from conftest import assert_same_tensors, signal_at

from affssl import faults, runs
from affssl.checkpoint import CheckpointError
from affssl.cli import app
from affssl.data import chunkread, chunkwrite, storage
from affssl.engine import pretrain
from affssl.errors import UserError
from affssl.learner import Learner
from affssl.spec import load_spec

TINY = ["backbone.width=4", "data.image_size_px=16", "train.batch_size=16", "train.epochs=2", "train.log_every=1",
        "method.proj_hidden=16", "method.proj_out=8", "affine.head_hidden=16"]  # fmt: skip
LOCAL = ("method.name=dino", "augment.local_crops=2", "method.prototypes=32")  # 2 + 2 crops, a small DINO head


def make_folder(root: Path, per_class: int = 24, square: int | None = None, seed: int = 0) -> Path:
    """root/train/c{0,1}/*.jpg: smooth random images of random sizes (12–28 px), or all square × square."""
    from torchcodec.encoders import JpegEncoder

    gen = torch.Generator().manual_seed(seed)
    for c in range(2):
        folder = root / "train" / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (square, square) if square else torch.randint(12, 29, (2,), generator=gen).tolist()
            coarse = torch.rand(1, 3, 4, 4, generator=gen)
            img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0]
            JpegEncoder((img * 255).to(torch.uint8)).to_file(str(folder / f"{i:03d}.jpg"), quality=95)
    return root


def spec_for(folder: Path, cache: Path, *overrides: str):
    return load_spec("default", [*TINY, f"data.dataset={folder}", f"data.root={cache}", *overrides])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("jpegs"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, folder) -> Path:
    """An uninterrupted chunks run (2 epochs of 3 steps) with one loader worker."""
    run = tmp_path_factory.mktemp("reference") / "run"
    pretrain(spec_for(folder, run.parent / "cache", "data.storage=chunks", "data.workers=1"), run, show_progress=False)
    return run


def test_chunks_are_written_once_with_the_resolved_spec(reference, folder):
    saved = json.loads((reference / runs.SPEC).read_text())["data"]
    assert (saved["storage"], saved["bad_count"], saved["bad_first"]) == ("chunks", 0, [])
    (written,) = (reference.parent / "cache" / "chunks").iterdir()
    meta = json.loads((written / chunkwrite.META).read_text())
    assert meta["count"] == 48 and meta["labels"] == [0] * 24 + [1] * 24 and meta["classes"] == ["c0", "c1"]
    first = sorted((folder / "train" / "c0").iterdir())[0].read_bytes()
    from litdata import StreamingDataset

    assert bytes(StreamingDataset(str(written))[0]["jpeg"]) == first  # small JPEGs keep their own bytes
    mtime = (written / "index.json").stat().st_mtime_ns
    assert storage.written(spec_for(folder, reference.parent / "cache").data, False) == written
    assert (written / "index.json").stat().st_mtime_ns == mtime  # found, not rewritten


def test_store_px_resizes_the_short_side_and_keeps_the_aspect(tmp_path, folder):
    spec = spec_for(folder, tmp_path / "cache", "data.storage=chunks", "data.store_px=12", "data.jpeg_quality=80")
    chunks = chunkread.open_chunks(storage.written(spec.data, False))
    from litdata import StreamingDataset
    from torchcodec.decoders import decode_jpeg

    ds = StreamingDataset(str(chunks.folder))
    sources = sorted((folder / "train" / "c0").iterdir())
    for i in range(5):
        h, w = decode_jpeg(str(sources[i])).shape[-2:]
        got = decode_jpeg(bytes(ds[i]["jpeg"])).shape[-2:]
        assert min(got) == 12 and abs(got[0] / got[1] - h / w) < 0.1


def test_sigterm_inside_an_epoch_then_resume_is_bit_identical_with_other_workers(tmp_path, monkeypatch, folder,
                                                                               reference):  # fmt: skip
    run, cache = tmp_path / "run", reference.parent / "cache"
    signal_at(monkeypatch, signal.SIGTERM, 4)  # inside epoch 2 (3 steps an epoch)
    with pytest.raises(faults.Preempted):
        pretrain(spec_for(folder, cache, "data.storage=chunks", "data.workers=1"), run, show_progress=False)
    monkeypatch.undo()
    # the batches do not depend on the loader's worker count: resume with none (the training process reads)
    pretrain(spec_for(folder, cache, "data.storage=chunks", "data.workers=0"), run, resume=True, show_progress=False)
    assert_same_tensors(reference / runs.LAST, run / runs.LAST)


@pytest.mark.parametrize("extra", [(), LOCAL], ids=["two-views", "dino-local-crops"])
def test_square_images_at_the_training_size_train_alike_on_both_storages(tmp_path, extra):
    # Whole image = the tensor cache's square; same order, same views (local ones too): the same weights.
    folder = make_folder(tmp_path / "square", per_class=16, square=16)
    for kind in ("tensor", "chunks"):
        pretrain(spec_for(folder, tmp_path / "cache", f"data.storage={kind}", "data.workers=0", "train.epochs=1",
                          *extra), tmp_path / kind, show_progress=False)  # fmt: skip
    assert_same_tensors(tmp_path / "tensor" / runs.LAST, tmp_path / "chunks" / runs.LAST)


def test_local_crops_train_on_chunks_of_images_of_any_size(tmp_path, folder):
    # Every view, local ones included, is cropped from its whole stored image (12–28 px, any aspect).
    spec = spec_for(folder, tmp_path / "cache", "data.storage=chunks", "data.workers=1", "train.epochs=1", *LOCAL)
    assert (spec.augment.local_crops, spec.augment.local_size_px) == (2, 9)  # 9/16 of 16 px
    pretrain(spec, tmp_path / "run", show_progress=False)
    steps = [r for r in runs.read_metrics(tmp_path / "run") if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(r["loss"] == r["loss"] for r in steps)  # 48 images
    torch.manual_seed(spec.train.seed)  # the engine's initial weights
    initial = Learner(spec).state_dict()
    trained = {k.removeprefix("model."): v for k, v in load_file(tmp_path / "run" / runs.LAST).items()}
    assert not torch.equal(trained["backbone.conv1.weight"], initial["backbone.conv1.weight"])  # it learned


def test_bad_images_are_skipped_counted_and_stop_the_run_past_max_bad_frac(tmp_path):
    folder = make_folder(tmp_path / "imgs", per_class=16)
    good = (folder / "train" / "c0" / "000.jpg").read_bytes()
    (folder / "train" / "c0" / "zz-cut.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (folder / "train" / "c1" / "zz-junk.jpg").write_bytes(b"not an image at all")
    sets = [*TINY[:-1], f"data.root={tmp_path / 'cache'}", "data.storage=chunks"]
    args = ["pretrain", "--no-progress", "--epochs", "1", "--dataset", str(folder)]
    args += [a for o in sets for a in ("--set", o)]
    stopped = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "strict")])
    lines = [line for line in stopped.output.splitlines() if line.strip()]
    assert stopped.exit_code == 2 and len(lines) == 1, stopped.output
    assert "2 of 34 images" in lines[0] and "zz-cut.jpg" in lines[0] and "data.max_bad_frac" in lines[0]
    assert not (tmp_path / "cache" / "chunks").exists() or not any((tmp_path / "cache" / "chunks").iterdir())

    ran = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run"), "--set", "data.max_bad_frac=0.1"])
    assert ran.exit_code == 0, ran.output
    assert "skipped 2 unreadable image(s)" in ran.output and "zz-junk.jpg" in ran.output
    saved = json.loads((tmp_path / "run" / runs.SPEC).read_text())["data"]
    assert saved["bad_count"] == 2 and [Path(p).name for p in saved["bad_first"]] == ["zz-cut.jpg", "zz-junk.jpg"]
    # the chunks (2 skipped) exist now; a run under the default limit checks the recorded skips against it
    again = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "strict-again")])
    lines = [line for line in again.output.splitlines() if line.strip()]
    assert again.exit_code == 2 and len(lines) == 1, again.output
    assert "2 of 34 images" in lines[0] and "data.max_bad_frac 0.001" in lines[0] and "zz-cut.jpg" in lines[0]
    assert not (tmp_path / "strict-again").exists()


def test_a_truncated_chunk_file_ends_with_one_line_naming_it(tmp_path, folder):
    spec = spec_for(folder, tmp_path / "cache", "data.storage=chunks", "data.workers=0")
    written = storage.written(spec.data, False)
    chunks = chunkread.open_chunks(written)
    (chunk,) = written.glob("chunk-*.bin")
    feed = chunkread.ChunkFeed(chunks, torch.arange(chunks.count), torch.device("cpu"), workers=0)
    os.truncate(chunk, chunk.stat().st_size // 2)  # cut short after the run opened it
    with pytest.raises(chunkread.ChunkError, match=r"chunk file .*chunk-.*bin has .* bytes.*delete .* rebuild"):
        list(feed.epoch([torch.arange(48).flip(0)[:16]], 0, 16, 0))
    result = CliRunner().invoke(app, ["pretrain", "--no-progress", "--out", str(tmp_path / "run"),
                                      *[a for o in [*TINY, f"data.dataset={folder}", f"data.root={tmp_path / 'cache'}",
                                                    "data.storage=chunks"] for a in ("--set", o)]])  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and chunk.name in lines[0] and "rebuild" in lines[0], lines


@pytest.mark.parametrize(("name", "how"), [("index.json", "delete"), ("index.json", "truncate"),
                                         ("affssl.json", "delete"), ("affssl.json", "truncate")])  # fmt: skip
def test_damaged_chunk_metadata_is_named_in_one_line_and_rebuilt(tmp_path, folder, name, how):
    sets = [*TINY, f"data.dataset={folder}", f"data.root={tmp_path / 'cache'}", "data.storage=chunks",
            "data.workers=0", "train.epochs=1"]  # fmt: skip
    written = storage.written(spec_for(folder, tmp_path / "cache", "data.storage=chunks").data, False)
    path = written / name
    path.unlink() if how == "delete" else os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(chunkread.ChunkError, match=f"{name} is (missing|unreadable).*delete .* rebuild"):
        chunkread.open_chunks(written)
    result = CliRunner().invoke(app, ["pretrain", "--no-progress", "--out", str(tmp_path / "run"),
                                      *[a for o in sets for a in ("--set", o)]])  # fmt: skip
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    notes = [line for line in result.output.splitlines() if "are damaged (" in line]
    assert len(notes) == 1 and name in notes[0] and "rebuilding" in notes[0], result.output
    assert chunkread.open_chunks(written).count == 48  # whole again, in place
    assert not list(written.parent.glob(".*.tmp"))


def test_every_single_byte_flip_in_a_chunk_ends_with_one_line(tmp_path, folder):
    # 20 flips spread over the chunk file (header, offsets, labels, JPEG bytes); each alone, then undone
    written = storage.written(spec_for(folder, tmp_path / "cache", "data.storage=chunks").data, False)
    chunks = chunkread.open_chunks(written)
    (chunk,) = written.glob("chunk-*.bin")
    original = chunk.read_bytes()
    positions = torch.randperm(len(original), generator=torch.Generator().manual_seed(0))[:20].tolist()
    every = [torch.arange(chunks.count)[k : k + 16] for k in range(0, chunks.count, 16)]
    silent = []
    for at in positions:
        flipped = bytearray(original)
        flipped[at] ^= 0xFF
        chunk.write_bytes(flipped)
        feed = chunkread.ChunkFeed(chunks, torch.arange(chunks.count), torch.device("cpu"), workers=0)
        try:
            list(feed.epoch(every, 0, 16, 0))
            silent.append(at)
        except chunkread.ChunkError as err:
            assert "\n" not in str(err) and "rebuild" in str(err) and str(written) in str(err), err
    chunk.write_bytes(original)
    assert silent == [], f"flips at bytes {silent} of {len(original)} were read without a word"
    list(chunkread.ChunkFeed(chunks, torch.arange(chunks.count), torch.device("cpu"), workers=0).epoch(every, 0, 16,
                                                                                                     0))  # fmt: skip


def test_chunks_without_litdata_ends_with_one_line_naming_the_extra(tmp_path, monkeypatch, folder):
    monkeypatch.setitem(sys.modules, "litdata", None)  # import litdata → ImportError
    result = CliRunner().invoke(app, ["pretrain", "--no-progress", "--out", str(tmp_path / "run"),
                                      *[a for o in [*TINY, f"data.dataset={folder}", "data.storage=chunks"]
                                        for a in ("--set", o)]])  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].endswith(chunkwrite.EXTRA), result.output


def test_chunks_need_an_image_folder():
    with pytest.raises(UserError, match="needs an image folder"):
        storage.resolve(load_spec("default", ["data.storage=chunks"]).data, torch.device("cpu"), None)


def test_auto_picks_tensor_while_the_set_fits_and_chunks_past_the_share(tmp_path, monkeypatch, folder, capsys):
    data = spec_for(folder, tmp_path / "cache").data
    assert data.storage == "auto"
    choice, why = storage.resolve(data, torch.device("cpu"), None)
    assert choice == "tensor" and "48 images decoded at 16 px" in why and "50% of RAM" in why
    assert storage.resolve(load_spec("default", []).data, torch.device("cpu"), None) == ("tensor", "")  # digits
    monkeypatch.setattr(storage, "AUTO_SHARE", 1e-12)
    choice, why = storage.resolve(data, torch.device("cpu"), None)
    assert choice == "chunks" and "more than" in why
    run = tmp_path / "run"
    pretrain(spec_for(folder, tmp_path / "cache", "train.epochs=1", "data.workers=0"), run, show_progress=False)
    assert json.loads((run / runs.SPEC).read_text())["data"]["storage"] == "chunks"
    assert capsys.readouterr().err.count("data.storage auto → chunks") == 1


def test_default_digits_run_is_the_tensor_path_bit_for_bit(tmp_path):
    for kind in ("auto", "tensor"):
        spec = load_spec("default", [*TINY, "data.limit=64", "train.epochs=1", f"data.storage={kind}"])
        pretrain(spec, tmp_path / kind, show_progress=False)
    assert_same_tensors(tmp_path / "auto" / runs.LAST, tmp_path / "tensor" / runs.LAST)
    assert json.loads((tmp_path / "auto" / runs.SPEC).read_text())["data"]["storage"] == "tensor"


def test_a_resume_with_another_process_count_is_refused_in_one_line(tmp_path, monkeypatch, folder, reference):
    # Written by a 2-process run stopped inside an epoch: position tensors hold 2 rows; one process refuses.
    run = tmp_path / "run"
    (run).mkdir()
    spec = spec_for(folder, reference.parent / "cache", "data.storage=chunks", "data.workers=0")
    tensors = load_file(reference / runs.LAST)
    from affssl import checkpoint

    header = checkpoint.read_header(reference / runs.LAST)
    state = torch.zeros(2, 5056, dtype=torch.uint8)  # (world, n) generator states
    tensors |= {"position.views": state, "position.affine": state.clone(), "position.sums": torch.zeros(2, 3)}
    header |= {"epoch_step": "1", "step": "4", "position_sums": json.dumps(["loss_ssl", "loss_affine", "loss"])}
    checkpoint.save(run / runs.LAST, tensors, header)
    runs.write_spec(run, spec)
    with pytest.raises(CheckpointError, match="with 2 processes; resume it with 2"):
        pretrain(spec, run, resume=True, show_progress=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run benchmarks/gpu_check.sh)")
def test_chunks_on_cuda_decode_each_batch_with_nvjpeg_and_train(tmp_path, folder):
    from torchcodec.decoders import decode_jpeg

    files = sorted((folder / "train" / "c0").iterdir())[:8]
    raw = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    on_gpu, on_cpu = decode_jpeg(raw, device="cuda"), decode_jpeg(raw)
    for g, c in zip(on_gpu, on_cpu, strict=True):  # nvJPEG's IDCT may differ from libjpeg-turbo's by a level or two
        assert g.is_cuda and g.shape == c.shape and (g.cpu().int() - c.int()).abs().float().mean() < 2
    run = tmp_path / "run"
    pretrain(spec_for(folder, tmp_path / "cache", "data.storage=chunks", "train.device=cuda"), run, show_progress=False)
    losses = [r["loss"] for r in runs.read_metrics(run) if r["kind"] == "epoch"]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_stored_jpegs_decode_as_the_tensor_cache_decodes_them(tmp_path):
    # An Exif orientation is ignored by the tensor cache (as torchvision and ImageFolder did); chunks drop it too.
    from litdata import StreamingDataset
    from PIL import Image
    from torchcodec.decoders import decode_jpeg

    from affssl.data.decode import decode_bytes

    folder = make_folder(tmp_path / "imgs", per_class=2)
    path = folder / "train" / "c0" / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    Image.new("RGB", (20, 12), (200, 30, 30)).save(path, exif=exif.tobytes(), quality=95)
    spec = spec_for(folder, tmp_path / "cache", "data.storage=chunks", "data.workers=0")
    written = storage.written(spec.data, False)
    files = sorted(p for p in (folder / "train").rglob("*.jpg"))
    stored = StreamingDataset(str(written))
    for i, p in enumerate(files):
        assert torch.equal(decode_jpeg(bytes(stored[i]["jpeg"])), decode_bytes(p.read_bytes())), p.name
