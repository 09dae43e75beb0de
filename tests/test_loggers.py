"""train.loggers: each logger's own reader gives back metrics.jsonl's numbers at the same steps, resume included.

One tiny run trains 2 epochs with every logger whose library is installed, then resumes to 3. No test
touches the network: W&B runs offline, MLflow writes a local file store, telemetry is off, and any
connection this process tries to a non-local address is recorded and fails the tests.
"""

import json
import socket
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

import affssl.loggers
from affssl import runs
from affssl.cli import app
from affssl.engine import pretrain
from affssl.loggers import IDS, scalars
from affssl.spec import load_spec

TINY = ["backbone.width=4", "data.image_size_px=16", "train.batch_size=32", "data.limit=96",
        "train.monitor_images=64", "train.monitor_queries=32", "train.log_every=2"]  # fmt: skip
LOCAL = ("127.0.0.1", "::1", "localhost")


def installed() -> list[str]:
    return [name for name, module in affssl.loggers.MODULES.items() if affssl.loggers.find_spec(module)]


def expected(run: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as every logger should hold it, from metrics.jsonl."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in runs.read_metrics(run):
        step, values = scalars(record)
        for tag, value in values.items():
            out.setdefault(tag, []).append((step, value))
    return out


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[Path, list]:
    """A run of 2 epochs resumed to 3 with every installed logger; returns (run folder, network attempts)."""
    if not installed():
        pytest.skip("none of tensorboard, mlflow, wandb is installed")
    tmp = tmp_path_factory.mktemp("loggers")
    attempts: list = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL:
            attempts.append(address)
            raise OSError("the tests do not touch the network")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL and host is not None:
            attempts.append(host)
            raise OSError("the tests do not touch the network")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp / "wb"),
                           "WANDB_CACHE_DIR": str(tmp / "wb"), "WANDB_DATA_DIR": str(tmp / "wb"),
                           "MLFLOW_TRACKING_URI": (tmp / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true",
                           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}.items():  # fmt: skip
            mp.setenv(key, value)
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        run = tmp / "run"
        chosen = f"train.loggers={json.dumps(installed())}"
        pretrain(load_spec("default", [*TINY, chosen, "train.epochs=2"]), run, show_progress=False)
        first = json.loads((run / IDS).read_text())
        pretrain(load_spec("default", [*TINY, chosen, "train.epochs=3"]), run, resume=True, show_progress=False)
        assert json.loads((run / IDS).read_text()) == first  # the same logger runs continue
    return run, attempts


def test_no_logger_touches_the_network(logged):
    assert logged[1] == []


def test_tensorboard_event_files_hold_metrics_jsonl(logged):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util.tensor_util import make_ndarray

    run, _ = logged
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    read = {tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"] if "/" in tag}  # fmt: skip
    want = expected(run)
    assert read.keys() == want.keys()
    for tag, points in want.items():
        assert [s for s, _ in read[tag]] == [s for s, _ in points], tag
        assert [v for _, v in read[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["train.epochs"].number_value == 2 and hparams["method.name"].string_value == "simclr"


def test_mlflow_run_holds_metrics_jsonl(logged):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run, _ = logged
    state = json.loads((run / IDS).read_text())["mlflow"]
    client = MlflowClient(state["tracking_uri"])
    experiment = client.get_experiment_by_name("affssl")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [state["run_id"]]
    for tag, points in expected(run).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], tag))
        assert history == points, tag
    logged_run = client.get_run(state["run_id"])
    assert logged_run.info.status == "FINISHED"
    assert logged_run.data.params["train.epochs"] == "2" and logged_run.data.tags["resumed.train.epochs"] == "3"


def wandb_records(path: Path) -> list:
    """The records of a .wandb file: W&B's 7-byte header, then LevelDB log framing (32 KiB blocks, each
    chunk checksum[4] length[2] type[1]: 1 full, 2 first, 3 middle, 4 last) around W&B's protobuf Records."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, parts, out = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block  # the block's tail is padding
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        if kind == 0:
            break
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            out.append(Record.FromString(parts))
            parts = b""
    return out


def test_wandb_offline_run_holds_metrics_jsonl(logged):
    pytest.importorskip("wandb")
    run, _ = logged
    run_id = json.loads((run / IDS).read_text())["wandb"]["run_id"]
    files = sorted((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # the first run and its resumption, under one id
    read: dict[str, list[tuple[int, float]]] = {}
    configs = []  # the spec each part of the run started with
    for record in (r for path in files for r in wandb_records(path)):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    read.setdefault(key, []).append((record.history.step.num, json.loads(item.value_json)))
        elif record.WhichOneof("record_type") == "run":
            configs.append({item.key: json.loads(item.value_json) for item in record.run.config.update})
    assert read == expected(run)
    assert [c["train.epochs"] for c in configs] == [2, 3] and configs[0]["method.name"] == "simclr"


def test_scalars_name_each_number_by_its_kind():
    record = {"kind": "epoch", "epoch": 2, "step": 8, "loss": 1.5, "ok": True, "note": "x"}
    assert scalars(record) == (8, {"epoch/epoch": 2.0, "epoch/loss": 1.5})
    assert scalars({"kind": "params", "total": 10}) == (0, {"params/total": 10.0})


def test_a_missing_extra_is_one_line_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(affssl.loggers, "find_spec", lambda name: None if name == "wandb" else object())
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pretrain", "--out", str(out), "--set", "train.loggers=['tensorboard','wandb']"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'affssl[wandb]'" in lines[0], result.output
    assert not out.exists()


def test_a_logger_that_fails_to_start_is_one_short_line_and_the_run_creates_nothing(tmp_path, monkeypatch):
    # The MLflow failure printed a 400-character exception and left RUN/spec.json behind.
    class Refuses:
        def __init__(self, *args):
            raise RuntimeError(" Model registry functionality is unavailable; got unsupported URI 'sqlite:///x.db'. "
                               + "See https://www.mlflow.org/docs for how to run a server. " * 5)  # fmt: skip

    monkeypatch.setitem(affssl.loggers.KINDS, "tensorboard", Refuses)
    monkeypatch.setattr(affssl.loggers, "find_spec", lambda name: object())
    out = tmp_path / "runs" / "run"
    sets = [a for o in TINY for a in ("--set", o)]
    result = CliRunner().invoke(app, ["pretrain", "--no-progress", "--epochs", "1", "--out", str(out), *sets,
                                      "--set", "train.loggers=['tensorboard']"])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and len(lines[0]) < 250, result.output
    assert "could not start the tensorboard logger (RuntimeError: Model registry functionality is unavailable)" \
        in lines[0] and "--debug" in lines[0], lines[0]  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # neither the run folder nor the runs/ made for it
    again = CliRunner().invoke(app, ["pretrain", "--no-progress", "--epochs", "1", "--out", str(out), *sets])
    assert again.exit_code == 0, again.output  # the same command without the logger simply runs: no --resume
