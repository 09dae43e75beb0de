"""The pretrain command: flags, --print-spec, and one-line errors (exit 2, no traceback)."""

import tomllib

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from affssl import runs
from affssl.cli import app

runner = CliRunner()
TINY = ["--set", "backbone.width=4", "--set", "data.image_size_px=16", "--batch-size", "32", "--limit", "64"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert fragment in result.output, result.output


def test_print_spec_applies_flags_then_set():
    result = run("pretrain", "--base", "barlow", "--no-affine", "--components", "scale,shear", "--epochs", "3",
                 "--set", "train.epochs=5", "--print-spec")  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = tomllib.loads(result.output)
    assert spec["method"]["name"] == "barlow" and spec["affine"]["weight"] == 10.0
    assert spec["affine"]["enabled"] is False and spec["affine"]["components"] == ["scale", "shear"]
    assert spec["train"]["epochs"] == 5


@pytest.mark.parametrize(("base", "weight"), [("vicreg", 5.0), ("mocov3", 1.0), ("simsiam", 0.25)])
def test_print_spec_takes_the_new_bases(base, weight):
    result = run("pretrain", "--base", base, "--print-spec")
    assert result.exit_code == 0, result.output
    spec = tomllib.loads(result.output)
    assert spec["method"]["name"] == base and spec["affine"]["weight"] == weight


@pytest.mark.parametrize("preset", ["default", "paper", "cifar10-cpu"])
@pytest.mark.parametrize("base", ["simclr", "byol", "barlow", "vicreg", "mocov3", "simsiam"])
def test_print_spec_is_toml_that_reads_back_the_same_spec(preset, base, tmp_path):
    from affssl.spec import load_spec

    flags = ["--base", base, "--components", "scale,shear", "--limit", "100", "--set", "train.max_loss=inf",
             "--set", "data.root=/tmp/elsewhere"]  # fmt: skip
    result = run("pretrain", preset, *flags, "--print-spec")
    assert result.exit_code == 0, result.output
    assert "null" not in result.output and "None" not in result.output
    (tmp_path / "s.toml").write_text(result.output)
    again = run("pretrain", tmp_path / "s.toml", "--print-spec")
    assert again.exit_code == 0 and again.output == result.output  # printed again: the same text
    overrides = [f"method.name={base}", 'affine.components=["scale","shear"]', "data.limit=100", "train.max_loss=inf",
                 "data.root=/tmp/elsewhere"]  # fmt: skip
    assert load_spec(tmp_path / "s.toml") == load_spec(preset, overrides)


def test_a_printed_spec_trains_the_same_run(tmp_path):
    flags = ["--base", "byol", "--epochs", "1", "--seed", "3", *TINY]
    printed = run("pretrain", *flags, "--print-spec")
    (tmp_path / "s.toml").write_text(printed.output)
    for args, out in ((flags, "flags"), ([tmp_path / "s.toml"], "file")):
        result = run("pretrain", *args, "--no-progress", "--out", tmp_path / out)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "flags/spec.json").read_text() == (tmp_path / "file/spec.json").read_text()
    a, b = (load_file(tmp_path / run_ / "last.safetensors") for run_ in ("flags", "file"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_pretrain_tiny_run_and_refuse_overwrite(tmp_path):
    out = tmp_path / "run"
    result = run("pretrain", "--epochs", "1", "--no-progress", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert f"checkpoint: {out / 'last.safetensors'}" in result.output.replace("\n", "")
    assert ", 1 epoch, final loss" in result.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert_one_line_error(run("pretrain", "--epochs", "1", "--out", out, *TINY), "--resume")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched


def corrupt_folder(root):
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--base", "moco"], "unknown base method 'moco'"),
        (["--base", "simclrr"], "unknown base method 'simclrr'; did you mean 'simclr'?"),
        (["--set", "optim.lrr=0.1"], "optim.lrr: unknown key"),
        (["--set", "train.batch_size='big'"], "train.batch_size"),
        (["--epochs", "-1"], "train.epochs"),
        (["--components", "scale,spin"], "affine.components"),
        (["--dataset", "/no/such/folder"], "/no/such/folder"),
        (["--resume", "--out", "/no/such/run"], "nothing to resume"),
        (["--resume"], "--resume needs --out"),
    ],
)
def test_bad_input_is_one_line(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default run folder runs/<base>-<kind>-<time> would go
    assert_one_line_error(run("pretrain", "--no-progress", *args), fragment)
    assert list(tmp_path.iterdir()) == []  # nothing created for a command that fails on its input


def test_no_run_folder_for_data_that_cannot_be_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_OFFLINE", "1")
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    assert_one_line_error(run("pretrain", "--dataset", "cifar10", "--out", tmp_path / "r0"), "AFFSSL_OFFLINE=1")
    folder = corrupt_folder(tmp_path / "corrupt")
    assert_one_line_error(run("pretrain", "--dataset", folder, "--out", tmp_path / "r1"), "broken.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt"]


def test_bad_files_are_one_line(tmp_path):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[train\n")
    assert_one_line_error(run("pretrain", bad_toml), "not valid TOML")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run("pretrain", "--dataset", empty, "--out", tmp_path / "r1"), str(empty))
    folder = corrupt_folder(tmp_path / "corrupt")
    assert_one_line_error(run("pretrain", "--dataset", folder, "--out", tmp_path / "r2"), "broken.jpg")


def test_wrong_type_flag_is_rejected_by_typer():
    result = run("pretrain", "--epochs", "ten")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_debug_shows_traceback():
    result = run("--debug", "pretrain", "--base", "moco")
    assert result.exit_code != 0 and result.exception is not None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--batch-size", "4000"], "fewer than one batch of 4000"),
        (["--set", "optim.lr=1e4", "--set", "train.max_loss=1e3"], "passed train.max_loss"),  # diverges in epoch 1
    ],
)
def test_a_failing_run_creates_nothing_and_the_same_folder_then_trains(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "r"
    tiny = [a for a in TINY if a != "--batch-size" and a != "32"] if "--batch-size" in args else TINY
    assert_one_line_error(run("pretrain", "--epochs", "1", "--no-progress", "--out", out, *tiny, *args), fragment)
    assert list(tmp_path.iterdir()) == []  # no RUN/spec.json, no runs/: a rerun needs no --resume
    kept = tmp_path / "mine"  # a folder the user made: it stays, with what it held
    kept.mkdir()
    assert_one_line_error(run("pretrain", "--epochs", "1", "--no-progress", "--out", kept, *tiny, *args), fragment)
    assert list(kept.iterdir()) == []
    result = run("pretrain", "--epochs", "1", "--no-progress", "--out", out, *TINY)
    assert result.exit_code == 0, result.output


def test_resume_to_fewer_epochs_than_trained_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    assert run("pretrain", "--epochs", "2", "--no-progress", "--out", out, *TINY).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run("pretrain", "--resume", "--epochs", "1", "--no-progress", "--out", out)
    assert_one_line_error(result, "is at epoch 2; pass --epochs 2 or more")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # spec.json still says 2 epochs


def test_threads_is_one_flag_for_train_threads():
    result = run("pretrain", "--threads", "1", "--print-spec")
    assert result.exit_code == 0 and tomllib.loads(result.output)["train"]["threads"] == 1, result.output
    assert tomllib.loads(run("pretrain", "--threads", "auto", "--print-spec").output)["train"]["threads"] == "auto"
    assert_one_line_error(run("pretrain", "--threads", "two"), "--threads 'two'")


def test_the_progress_line_shows_this_epochs_knn_and_done_gives_the_final_scores(tmp_path):
    # The issue: the line showed the kNN one epoch behind (none at all in a one-epoch run); done gave none.
    result = run("pretrain", "--epochs", "1", "--out", tmp_path / "run", *TINY)
    assert result.exit_code == 0, result.output
    final = [r for r in runs.read_metrics(tmp_path / "run") if r.get("kind") == "epoch"][-1]
    knn = f"kNN {final['monitor_knn_top1']:.1f} %"
    bar = [line for line in result.output.splitlines() if line.startswith("pretrain")]
    assert bar and knn in bar[-1], result.output
    done = " ".join(result.output[result.output.index("done in") :].split())
    assert f"monitor {knn}, R² " in done and "(epoch 1)" in done, done


@pytest.mark.parametrize(
    "argv",
    [["pretrain", "--debug", "--base", "moco"], ["pretrain", "--base", "moco", "--debug"],
     ["eval", "linear", "/no/such.safetensors", "--debug"], ["eval", "--debug", "knn", "/no/such.safetensors"],
     ["export", "/no/such.safetensors", "--out", "x.safetensors", "--debug"], ["ablate", "--debug", "--base", "moco"]],
    ids=" ".join,
)  # fmt: skip
def test_debug_is_taken_after_the_command_name_too(argv):
    result = run(*argv)
    assert result.exit_code != 0 and result.exception is not None and "No such option" not in result.output
    assert not isinstance(result.exception, SystemExit), result.output  # the error itself, with its traceback
    assert_one_line_error(run(*[a for a in argv if a != "--debug"]), "")  # without it: the one line again


def test_a_run_folder_without_a_checkpoint_points_at_overwrite_not_round_in_circles(tmp_path):
    # The issue: a failed run's leftover spec.json made a rerun say "pass --resume" and --resume say "drop --resume".
    out = tmp_path / "run"
    out.mkdir()
    (out / "spec.json").write_text("{}")
    assert_one_line_error(run("pretrain", "--out", out, *TINY), "saved no checkpoint; pass --overwrite")
    assert_one_line_error(run("pretrain", "--resume", "--out", out), "pass --overwrite instead of --resume")
    result = run("pretrain", "--overwrite", "--epochs", "1", "--no-progress", "--out", out, *TINY)
    assert result.exit_code == 0, result.output


def test_a_command_refused_by_another_writers_lock_removes_nothing(tmp_path):
    from affssl import runlock

    out = tmp_path / "live"
    with runlock.hold(out):  # another writer, mid-run, before its first checkpoint
        (out / "spec.json").write_text("{}")
        (out / "metrics.jsonl").write_text("")
        result = run("pretrain", "--overwrite", "--epochs", "1", "--no-progress", "--out", out, *TINY)
        assert_one_line_error(result, "is being written by")
        assert sorted(p.name for p in out.iterdir()) == [".lock", "metrics.jsonl", "spec.json"]
