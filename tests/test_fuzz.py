"""Property-based fuzzing: any spec text, --set value, checkpoint file or image file ends in success or one line.

Each case must exit with 0, or with 2 and a single `error:` line, and never show a traceback.
Cases per test are bounded (settings below) so the whole module runs in well under a minute;
`pytest -s` prints how many cases each test ran.
"""

import json
import string
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from affssl.cli import app
from affssl.spec import RunSpec, flatten

runner = CliRunner()
FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
FIELDS = sorted(flatten(json.loads(RunSpec().model_dump_json())))  # every dotted field of a spec
SECTIONS = sorted({f.split(".")[0] for f in FIELDS})
counts: dict[str, int] = {}


def check(args, name: str) -> None:
    """One CLI invocation: exit 0, or exit 2 with one `error:` line; never a traceback or another code."""
    counts[name] = counts.get(name, 0) + 1
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    if result.exit_code == 2 and "Usage:" not in result.output:  # typer's own parse errors show its usage box
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nfuzz cases run: {counts} (total {sum(counts.values())})")


# ---------------------------------------------------------------------------------------------
# Spec text and --set values


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["simclr", "byol", "barlow", "digits", "resnet18", "cpu", "nearest", "diff", "scale"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=6)
keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(["method.name", "method", "data", "train", "affine.components", "data.dataset"]),
    st.text(string.ascii_lowercase + "._", min_size=1, max_size=20),
)


def toml_value(v) -> str:
    """A value in TOML syntax where it has one (JSON's strings, numbers, booleans and arrays mostly are)."""
    return json.dumps(v) if v is not None else "nan"


@FAST
@given(st.text(max_size=200))
def test_random_spec_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(text)
    check(["pretrain", path, "--print-spec"], "spec text")


@FAST
@given(st.dictionaries(st.sampled_from([*SECTIONS, "x"]), st.dictionaries(keys, values, max_size=4), max_size=4))
def test_random_spec_tables(tmp_path_factory, tables):
    lines = []
    for section, entries in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{json.dumps(k.rsplit('.', 1)[-1])} = {toml_value(v)}" for k, v in entries.items()]
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text("\n".join(lines) + "\n")
    check(["pretrain", path, "--print-spec"], "spec tables")


@FAST
@given(st.lists(st.tuples(keys, st.one_of(values.map(toml_value), st.text(max_size=20))), max_size=4))
@example([("backbone.name", "[]")])  # found by CI's fuzzing: a list for a name reached a dict lookup
@example([("backbone.name", "{a = 1}")])
@example([("backbone.name", "3")])
def test_random_set_overrides(pairs):
    args = [a for k, v in pairs for a in ("--set", f"{k}={v}")]
    check(["pretrain", *args, "--print-spec"], "--set")


@FAST
@given(st.text(max_size=30), st.sampled_from(["--base", "--components", "--dataset", "--backbone", "--device"]))
def test_random_shortcut_flag_values(value, flag):
    check(["pretrain", flag, value, "--print-spec"], "shortcut flags")


# ---------------------------------------------------------------------------------------------
# Checkpoint files: random bytes, truncations, corrupted headers


def mutate(data: bytes, how: str, position: int, payload: bytes) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    if how == "truncate":
        return data[: position % len(data)]
    if how == "flip header byte":
        i = 8 + position % n
        return data[:i] + bytes([data[i] ^ (1 + payload[0] % 255 if payload else 1)]) + data[i + 1 :]
    if how == "header length":
        return struct.pack("<Q", int.from_bytes(payload[:8].ljust(8, b"\0"), "little")) + data[8:]
    if how == "replace header":  # a random JSON header, length kept consistent
        header = payload.decode("latin-1").encode()
        return struct.pack("<Q", len(header)) + header + data[8 + n :]
    return payload  # random bytes


def header_with(data: bytes, **meta) -> bytes:
    """The checkpoint with metadata values replaced (a valid safetensors header, odd affssl content)."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"] |= meta
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


HOWS = ["truncate", "flip header byte", "header length", "replace header", "random bytes"]


@SLOW
@given(st.sampled_from(HOWS), st.integers(0, 2**31), st.binary(max_size=300))
def test_corrupted_checkpoint_export(tiny_checkpoint, tmp_path_factory, how, position, payload):
    folder = tmp_path_factory.mktemp("ckpt")
    bad = folder / "last.safetensors"
    bad.write_bytes(mutate(tiny_checkpoint.read_bytes(), how, position, payload))
    check(["export", bad, "--out", folder / "bb.safetensors"], "checkpoint export")


@SLOW
@given(
    st.sampled_from(["format", "spec", "epoch", "backbone", "image_size_px"]),
    st.one_of(st.text(max_size=40), values.map(json.dumps)),
)
def test_odd_checkpoint_metadata_export(tiny_checkpoint, tmp_path_factory, key, value):
    folder = tmp_path_factory.mktemp("ckpt")
    bad = folder / "last.safetensors"
    bad.write_bytes(header_with(tiny_checkpoint.read_bytes(), **{key: value}))
    check(["export", bad, "--out", folder / "bb.safetensors"], "checkpoint metadata export")


@SLOW
@given(st.sampled_from(["truncate", "header length", "replace header", "random bytes"]), st.integers(0, 2**31),
       st.binary(max_size=300))  # fmt: skip
def test_corrupted_checkpoint_eval_linear(tiny_checkpoint, tmp_path_factory, how, position, payload):
    folder = tmp_path_factory.mktemp("ckpt")
    bad = folder / "last.safetensors"
    data = tiny_checkpoint.read_bytes()
    bad.write_bytes(mutate(data, how, position % (len(data) - 1), payload))  # never the whole file
    check(["eval", "linear", bad, "--limit", "20", "--trials", "1", "--no-cache"], "checkpoint eval linear")


# ---------------------------------------------------------------------------------------------
# Image folders with files of random bytes


@SLOW
@given(st.lists(st.tuples(st.sampled_from([".jpg", ".png", ".bmp", ".jpeg"]), st.binary(max_size=200),
                          st.sampled_from([b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"BM"])),
                min_size=1, max_size=4))  # fmt: skip
def test_image_folder_of_random_bytes(tmp_path_factory, monkeypatch_module, files):
    root = tmp_path_factory.mktemp("images")
    for i, (ext, body, magic) in enumerate(files):
        (root / "cls").mkdir(exist_ok=True)
        (root / "cls" / f"{i}{ext}").write_bytes(magic + body)
    tiny = ["--set", "backbone.width=4", "--set", "data.image_size_px=8", "--batch-size", "2"]
    check(
        ["pretrain", "--dataset", root, "--out", root / "run", "--epochs", "1", "--no-progress", *tiny], "image folder"
    )


@pytest.fixture(scope="module")
def monkeypatch_module(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AFFSSL_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield mp
    mp.undo()
