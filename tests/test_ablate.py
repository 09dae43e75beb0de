"""`affssl ablate`: plan expansion, restartability, statistics against scipy, the acceptance command end to end."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

import affssl.eval
from affssl import ablate as ab
from affssl import checkpoint, engine, runs
from affssl import stats as ablate_stats
from affssl.ablate.runner import curve_epochs
from affssl.cli import app
from affssl.errors import UserError
from affssl.eval.features import slug
from affssl.spec import RunSpec, load_spec

runner = CliRunner()
TINY = ["--set", "backbone.width=4", "--set", "data.image_size_px=16", "--batch-size", "32", "--limit", "32",
        "--epochs", "1", "--device", "cpu"]  # fmt: skip
PROBE = ["--eval-trials", "1", "--eval-limit", "50", "--eval-max-iter", "50"]
HOLDER = "import sys; from pathlib import Path; from affssl import runlock\n" \
         "with runlock.hold(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()\n"  # fmt: skip
ACCEPTANCE = ["ablate", "--components", "scale,shear", "--base", "simclr", "--seeds", "2", "--no-floor", *TINY, *PROBE]


def names(**options) -> list[str]:
    return [v.name for v in ab.variants(ab.make_ablation(default_base="simclr", first_seed=0, **options))]


# ---------------------------------------------------------------------------------------------
# Plan expansion


def test_components_give_baseline_together_and_each_alone():
    assert names(components="scale,shear") == [
        "simclr/base",
        "simclr/affine-scale+shear",
        "simclr/affine-scale",
        "simclr/affine-shear",
    ]
    assert names(components="shear,scale", subsets="together") == ["simclr/base", "simclr/affine-scale+shear"]
    assert names(components="scale") == ["simclr/base", "simclr/affine-scale"]  # together == the single
    assert names()[1] == "simclr/affine-all"  # default: the four components, then each alone
    assert len(names()) == 1 + 1 + 4


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_subsets_all_is_every_nonempty_subset_plus_baseline(k):
    comps = ["rotation", "translation", "scale", "shear"][:k]
    ablation = ab.make_ablation(default_base="byol", first_seed=0, components=",".join(comps), subsets="all")
    vs = ab.variants(ablation)
    assert len(vs) == 2**k - 1 + 1 and vs[0].name == "byol/base"
    assert len({v.components for v in vs}) == len(vs)  # all distinct
    assert [v.name for v in vs if v.reference] == [f"byol/affine-{'all' if k == 4 else '+'.join(comps)}"]


def test_axes_multiply_the_affine_variants_and_name_their_folders():
    ablation = ab.make_ablation(default_base="simclr", first_seed=3, components="scale,shear",
                                axes={"aggregation": "diff,concat", "views": "1,2"}, seeds=2)  # fmt: skip
    vs = ab.variants(ablation)
    assert len(vs) == 1 + 3 * 2 * 2
    assert "simclr/affine-scale-concat-views2" in [v.name for v in vs]
    assert [v.name for v in vs if v.reference] == ["simclr/affine-scale+shear-diff-views1"]
    assert ablation.seeds == (3, 4)
    two_bases = ab.make_ablation(default_base="simclr", first_seed=0, bases="simclr,barlow", components="scale")
    assert names(bases="simclr,barlow", components="scale") == [v.name for v in ab.variants(two_bases)]
    assert [v.name for v in ab.variants(two_bases)] == ["simclr/base", "simclr/affine-scale", "barlow/base",
                                                        "barlow/affine-scale"]  # fmt: skip


def build(base: str, extra: list[str]) -> RunSpec:
    return load_spec("default", [f"method.name={base}", *extra])


def test_plan_sets_overrides_and_seeds_outermost(tmp_path):
    ablation = ab.make_ablation(default_base="simclr", first_seed=0, components="scale,shear", seeds=2,
                                axes={"fill": "bounded"})  # fmt: skip
    planned = ab.plan(ablation, build)
    assert [(r.variant.name, r.seed) for r in planned[:5]] == [
        ("simclr/base", 0), ("simclr/affine-scale+shear-bounded", 0), ("simclr/affine-scale-bounded", 0),
        ("simclr/affine-shear-bounded", 0), ("simclr/base", 1)]  # fmt: skip
    assert not planned[0].spec.affine.enabled and planned[4].spec.train.seed == 1
    assert planned[1].spec.affine.components == ("scale", "shear") and planned[1].spec.affine.fill == "bounded"
    assert planned[2].folder == Path("simclr/affine-scale-bounded/seed-0")
    path = ab.write_plan(tmp_path, ablation, planned)
    record = json.loads(path.read_text())
    assert record["format"] == ab.ABLATE_FORMAT and len(record["runs"]) == 8
    assert RunSpec.model_validate(record["runs"][1]["spec"]) == planned[1].spec


@pytest.mark.parametrize("preset", list(ab.PRESETS))
def test_presets_expand_to_valid_specs(preset):
    ablation = ab.make_ablation(default_base="simclr", first_seed=0, preset=preset)
    planned = ab.plan(ablation, build)
    refs = [r.variant.name for r in planned if r.variant.reference]
    assert len(refs) == len(ablation.bases)  # one reference (all components, first axis values) per base
    if preset == "main":  # the paper's three bases, whatever else the registry holds
        assert ab.PAPER_BASES == ("simclr", "byol", "barlow")
        assert [r.variant.name for r in planned] == [f"{b}/{k}" for b in ab.PAPER_BASES for k in ("base", "affine-all")]
    if preset == "weight":
        assert {r.spec.affine.weight for r in planned if r.spec.affine.enabled} == {10.0, 1.0}
        assert {r.spec.method.name for r in planned} == {"barlow"}
    if preset == "views":
        assert {r.spec.affine.views for r in planned if r.spec.affine.enabled} == {1, 2}


def test_new_bases_plan_with_their_own_affine_weight():
    ablation = ab.make_ablation(default_base="simclr", first_seed=0, bases="vicreg,mocov3,simsiam", components="scale")
    planned = ab.plan(ablation, build)
    assert [r.variant.name for r in planned] == [f"{b}/{k}" for b in ("vicreg", "mocov3", "simsiam")
                                                 for k in ("base", "affine-scale")]  # fmt: skip
    assert {r.spec.method.name: r.spec.affine.weight for r in planned} == {"vicreg": 5.0, "mocov3": 1.0,
                                                                          "simsiam": 0.25}  # fmt: skip


def test_ablate_cli_dry_run_accepts_the_new_bases():
    result = runner.invoke(
        app, ["ablate", "--base", "vicreg,mocov3,simsiam", "--components", "scale", "--dry-run", "--no-floor"]
    )
    assert result.exit_code == 0, result.output
    for base in ("vicreg", "mocov3", "simsiam"):
        assert f"{base}/base" in result.output and f"{base}/affine-scale" in result.output
    assert "6 runs" in result.output


@pytest.mark.parametrize(
    "options",
    [{"components": "scale,zoom"}, {"bases": "moco"}, {"bases": "byol,byol"},
     {"subsets": "pairs"}, {"preset": "table9"}, {"seeds": 0},
     {"eval_settings": ab.EvalSettings(protocols=("linear", "svm"))}, {"axes": {"views": "1,1"}}],
)  # fmt: skip
def test_bad_ablations_are_user_errors(options):
    with pytest.raises(UserError):
        ab.make_ablation(default_base="simclr", first_seed=0, **options)


def test_bad_axis_value_fails_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "pretrain", _never)
    result = runner.invoke(app, ["ablate", "--components", "scale", "--fill", "grey", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "affine.fill" in result.output
    assert not (tmp_path / ab.PLAN).exists()


# ---------------------------------------------------------------------------------------------
# Statistics: the paper's raw SimCLR CIFAR-10 trials (paper.md §3.1)

SIMCLR = [52.87, 52.99, 53.00, 52.66, 52.86]
SIMCLR_AFFINE = [55.11, 55.10, 54.90, 55.04, 55.34]


def test_t_interval_matches_scipy_and_the_paper():
    for values in (SIMCLR, SIMCLR_AFFINE, [1.0, 2.0], [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]):
        m = sum(values) / len(values)
        low, high = stats.t.interval(0.95, len(values) - 1, loc=m, scale=stats.sem(values))
        assert ablate_stats.ci_half_width(values) == pytest.approx((high - low) / 2, rel=1e-12)
        assert ablate_stats.mean(values) == pytest.approx(m, rel=1e-15)
    assert ablate_stats.fmt(ablate_stats.mean(SIMCLR)) == "52.88"  # paper: 52.88 ± 0.17, 55.10 ± 0.20
    assert ablate_stats.fmt(ablate_stats.ci_half_width(SIMCLR)) == "0.17"
    assert ablate_stats.fmt(ablate_stats.ci_half_width(SIMCLR_AFFINE)) == "0.20"


def test_welch_p_matches_the_welch_satterthwaite_formula():
    a, b = SIMCLR_AFFINE, SIMCLR
    va, vb = stats.tvar(a) / len(a), stats.tvar(b) / len(b)  # squared standard errors
    t = (sum(a) / len(a) - sum(b) / len(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p = 2 * stats.t.sf(abs(t), df)
    assert ablate_stats.welch_p(a, b) == pytest.approx(p, rel=1e-9)
    assert ablate_stats.welch_p(b, a) == pytest.approx(p, rel=1e-9)
    assert p < 1e-6  # the paper's Student test gives 1.09e-8; Welch has fewer degrees of freedom
    c = ablate_stats.compare(a, b)
    assert c.gain == pytest.approx(2.222, abs=1e-9) and c.relative == pytest.approx(2.222 / 52.876, rel=1e-9)
    assert ablate_stats.fmt(100 * c.relative, 1, signed=True) == "+4.2"


def test_degenerate_samples_are_nan_and_print_as_a_dash():
    assert math.isnan(ablate_stats.ci_half_width([53.0]))
    assert math.isnan(ablate_stats.welch_p([53.0], SIMCLR))
    assert math.isnan(ablate_stats.welch_p([1.0, 1.0], [2.0, 2.0]))  # no spread anywhere: no test
    assert ablate_stats.ci_half_width([2.0, 2.0, 2.0]) == 0.0
    assert 0 < ablate_stats.welch_p([2.0, 2.0, 2.0], [1.0, 2.0, 3.5]) < 1  # one side without spread is fine
    assert math.isnan(ablate_stats.relative_gain(1.0, 0.0))
    s = ablate_stats.summarize([53.0])
    assert (s.n, s.mean) == (1, 53.0) and ablate_stats.fmt(s.ci95) == "—" and ablate_stats.fmt_p(math.nan) == "—"
    assert ablate_stats.fmt_p(1.09e-8) == "1.1e-08" and ablate_stats.fmt_p(0.0123) == "0.012"


# ---------------------------------------------------------------------------------------------
# Restartability with a fake engine and probe (the folder contract only; no training)


def _never(*args, **kwargs):
    raise AssertionError("nothing should run")


class Fakes:
    """engine.pretrain and affssl.eval.evaluate_linear that write the files the real ones write."""

    def __init__(self, interrupt_after: int | None = None):
        self.trained: list[tuple[str, bool]] = []
        self.evaluated: list[str] = []
        self.interrupt_after = interrupt_after

    def pretrain(self, spec: RunSpec, run: Path, resume: bool = False, show_progress: bool = True, data=None) -> Path:
        if self.interrupt_after is not None and len(self.trained) == self.interrupt_after:
            runs.write_spec(run, spec)  # killed mid-way: a spec and nothing else
            raise KeyboardInterrupt
        self.trained.append((str(run), resume))
        start = int(checkpoint.read_header(run / runs.LAST)["epoch"]) if resume else 0
        if not resume:
            runs.write_spec(run, spec)
            runs.append_metrics(run, {"kind": "params", "backbone": 10, "method": 5, "head": 1, "total": 16,
                                      "head_overhead_frac": 1 / 16})  # fmt: skip
        for epoch in range(start + 1, spec.train.epochs + 1):
            runs.append_metrics(run, {"kind": "epoch", "epoch": epoch, "loss": 1.0 / epoch,
                                      "epoch_time_s": 2.0 + spec.affine.enabled + 2 * spec.augself.enabled,
                                      "img_per_s": 32.0 / (1 + spec.augself.enabled)})  # fmt: skip
            meta = checkpoint.metadata_json(format=checkpoint.TRAIN_FORMAT, spec=spec.model_dump_json(), epoch=epoch)
            for path in {runs.epoch_checkpoint(run, epoch), run / runs.LAST}:
                checkpoint.save(path, {"w": torch.zeros(1)}, meta)
        return run / runs.LAST

    def evaluate_linear(self, ckpt: Path, *, dataset=None, trials=5, seed=0, limit=None, max_iter=None, **_) -> dict:
        self.evaluated.append(str(ckpt))
        header = checkpoint.read_header(ckpt)
        spec = RunSpec.model_validate_json(header["spec"])
        acc = [50.0 + spec.train.seed + 5 * spec.affine.enabled + int(header["epoch"]) + t for t in range(trials)]
        record = {"checkpoint": {"epoch": header["epoch"]}, "dataset": {"limit": limit},
                  "options": {"max_iter": max_iter}, "seeds": [seed + t for t in range(trials)],
                  "result": {"top1_pct": sum(acc) / trials, "trials": [{"test_acc_pct": a} for a in acc]}}  # fmt: skip
        path = Path(ckpt).parent / "eval" / f"linear-{slug(dataset or spec.data.dataset)}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(record))
        return record | {"path": str(path)}


@pytest.fixture()
def fakes(monkeypatch):
    def install(interrupt_after: int | None = None) -> Fakes:
        f = Fakes(interrupt_after)
        monkeypatch.setattr(engine, "pretrain", f.pretrain)
        monkeypatch.setattr(affssl.eval, "evaluate_linear", f.evaluate_linear)
        monkeypatch.setattr("affssl.ablate.runner.load_dataset", lambda spec, seed=0: None)
        return f

    return install


FAST = ["ablate", "--components", "scale,shear", "--base", "simclr", "--seeds", "2", "--epochs", "2", "--no-floor"]


def test_a_killed_ablation_completes_only_the_missing_runs(tmp_path, fakes):
    argv = [*FAST, "--out", str(tmp_path)]
    first = fakes(interrupt_after=3)
    killed = runner.invoke(app, argv)  # Ctrl-C during the fourth run's training
    assert killed.exit_code == 130 and len(first.trained) == 3
    assert json.loads((tmp_path / ab.PLAN).read_text())["runs"][7]["folder"] == "simclr/affine-shear/seed-1"
    # a fourth run was killed mid-training (spec only); make a third one a run killed after epoch 1
    third = tmp_path / "simclr/affine-scale/seed-0"
    for name in ("epoch-0002.safetensors", "metrics.jsonl"):
        (third / name).unlink()
    meta = checkpoint.metadata_json(format=checkpoint.TRAIN_FORMAT, spec=build("simclr", []).model_dump_json(), epoch=1)
    checkpoint.save(third / runs.LAST, {"w": torch.zeros(1)}, meta)
    (third / "eval/linear-digits.json").unlink()

    second = fakes()
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert second.trained == [(str(third), True)] + [(str(tmp_path / f), False) for f in (
        "simclr/affine-shear/seed-0", "simclr/base/seed-1", "simclr/affine-scale+shear/seed-1",
        "simclr/affine-scale/seed-1", "simclr/affine-shear/seed-1")]  # fmt: skip
    assert result.output.count("skipped (finished)") == 2 and result.output.count("done in") == 6
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["epochs"] for r in rows} == {"2"}

    third_call = fakes()
    result = runner.invoke(app, argv)
    assert result.exit_code == 0 and third_call.trained == [] and third_call.evaluated == []
    assert result.output.count("skipped (finished)") == 8


def test_stale_eval_is_redone_without_retraining_and_other_specs_are_refused(tmp_path, fakes):
    argv = [*FAST, "--seeds", "1", "--out", str(tmp_path)]
    fakes()
    assert runner.invoke(app, argv).exit_code == 0
    again = fakes()
    result = runner.invoke(app, [*argv, "--eval-trials", "3"])
    assert result.exit_code == 0 and again.trained == [] and len(again.evaluated) == 4
    summary = (tmp_path / "summary.md").read_text()  # one seed: the samples are the 3 probe trials
    assert "linear-probe trial" in summary and "| simclr/base | 3 | 53.00 ± 2.48 |" in summary
    assert "| simclr/affine-scale | 3 | 58.00 ± 2.48 | — | +5.00 (+9.4 %) |" in summary
    longer = fakes()
    assert runner.invoke(app, [*argv, "--epochs", "3", "--eval-trials", "3"]).exit_code == 0
    assert [resume for _, resume in longer.trained] == [True] * 4  # more epochs: resumed, not restarted
    other = fakes()
    refused = runner.invoke(app, [*argv, "--epochs", "3", "--eval-trials", "3", "--set", "optim.lr=0.5"])
    assert refused.exit_code == 2 and "choose another --out" in refused.output and "optim.lr" in refused.output
    assert other.trained == []


def test_probes_run_at_the_runs_thread_count_also_when_only_evaluating(tmp_path, fakes, monkeypatch):
    from affssl import cpus

    argv, seen = [*FAST, "--seeds", "1", "--out", str(tmp_path)], []

    def install() -> Fakes:
        f = fakes()
        probe = lambda ckpt, **kw: seen.append(torch.get_num_threads()) or f.evaluate_linear(ckpt, **kw)  # noqa: E731
        monkeypatch.setattr(affssl.eval, "evaluate_linear", probe)
        return f

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the fake engine sets no threads: the probes' count comes from the runner
        install()
        assert runner.invoke(app, [*argv, "--set", "train.threads=1"]).exit_code == 0
        assert seen == [1] * 4
        monkeypatch.setattr(cpus, "available", lambda *a, **k: 3)  # auto: this machine's figure
        again = install()
        assert runner.invoke(app, [*argv, "--eval-trials", "3"]).exit_code == 0  # stale records: probes only
        assert again.trained == [] and seen == [1] * 4 + [3] * 4
    finally:
        torch.set_num_threads(threads)


def test_a_run_folder_written_by_a_live_process_is_refused_in_one_line(tmp_path, fakes):
    run = tmp_path / "simclr/base/seed-0"  # the plan's first run
    run.mkdir(parents=True)
    (run / "partial.bin").write_bytes(b"left by the holder")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        f = fakes()
        result = runner.invoke(app, [*FAST, "--out", str(tmp_path)])
    finally:
        holder.communicate("", timeout=30)
    assert result.exit_code == 2 and f.trained == [] and "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {run} is being written by pid {holder.pid} on "), lines
    assert lines[0].endswith("wait for it to end (or stop it), or pass another --out"), lines
    assert (run / "partial.bin").read_bytes() == b"left by the holder"  # refused before the folder was emptied


def test_curve_probes_periodic_checkpoints_in_their_own_folders(tmp_path, fakes):
    f = fakes()
    argv = [*FAST, "--seeds", "2", "--subsets", "together", "--epochs", "3", "--set", "train.checkpoint_every=1",
            "--curve", "--out", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert len(f.evaluated) == 4 * 3  # 4 runs × (epochs 1, 2 from the curve + the last checkpoint)
    run = tmp_path / "simclr/base/seed-0"
    assert json.loads((run / "eval/linear-digits.json").read_text())["checkpoint"]["epoch"] == "3"
    assert json.loads((run / "curve/epoch-0001/eval/linear-digits.json").read_text())["checkpoint"]["epoch"] == "1"
    assert (tmp_path / "curve.png").stat().st_size > 0
    again = fakes()
    assert runner.invoke(app, argv).exit_code == 0 and again.evaluated == []


def test_equal_time_run_gets_the_affine_runs_time_in_whole_epochs(tmp_path, fakes):
    f = fakes()  # fake epochs: 2 s without the module, 3 s with it → ratio 1.5
    argv = [*FAST, "--subsets", "together", "--epochs", "4", "--match-time", "--curve-points", "4",
            "--out", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    run = tmp_path / "simclr/base-equal-time/seed-1"
    assert RunSpec.model_validate_json((run / "spec.json").read_text()).train.epochs == 6  # round(4 × 1.5)
    assert json.loads((run / "match.json").read_text()) == {"t_base_s": 8.0, "t_affine_s": 12.0, "time_ratio": 1.5,
                                                            "base_epochs": 4, "epochs": 6}  # fmt: skip
    assert (str(run), False) in f.trained and len(f.trained) == 6
    with open(tmp_path / "results.csv") as fh:
        rows = {(r["variant"], r["seed"]): r for r in csv.DictReader(fh)}
    equal, base = rows[("simclr/base-equal-time", "0")], rows[("simclr/base", "0")]
    assert (equal["time_ratio"], equal["epochs"], base["time_ratio"], base["epochs"]) == ("1.5000", "6", "", "4")
    # --curve-points 4: epochs 1, 2, 3 + the last for the 4-epoch runs; 2, 3, 5 (of 1 … 5) + 6 for equal time
    assert sorted(p.name for p in (run / "curve").iterdir()) == ["epoch-0002", "epoch-0003", "epoch-0005"]
    summary = (tmp_path / "summary.md").read_text()
    assert "Holm p vs equal time" in summary and "| simclr/base-equal-time | 0 | 1.5000 | 6 | 12.0 |" in summary
    assert "vs floor (points)" in result.output and "vs base (%)" in result.output  # each column's unit
    again = fakes()
    assert runner.invoke(app, argv).exit_code == 0 and again.trained == [] and again.evaluated == []


def test_curve_points_set_checkpoint_every():
    ev = ab.EvalSettings(curve=True, curve_points=4)
    ablation = ab.make_ablation(default_base="simclr", first_seed=0, components="scale", eval_settings=ev)
    planned = ab.plan(ablation, lambda b, extra: build(b, ["train.epochs=10", *extra]))
    assert {r.spec.train.checkpoint_every for r in planned} == {2}  # epochs 2, 4, 6, 8 + the last: 5 points
    with pytest.raises(UserError, match="curve-points"):
        ab.make_ablation(default_base="simclr", first_seed=0, eval_settings=ab.EvalSettings(curve_points=0))


@pytest.mark.parametrize(
    ("kept", "epochs", "points", "expected"),
    [
        ([1, 2, 3, 4, 5], 6, 4, [2, 3, 5]),  # targets 1.5, 3, 4.5: ties go to the later epoch
        ([1, 2, 3, 4, 5, 6], 7, 4, [2, 4, 5]),  # 1.75, 3.5, 5.25
        ([2, 4, 6, 8], 9, 4, [2, 4, 6]),  # checkpoint_every 2: 2.25, 4.5, 6.75 → the nearest kept
        ([1, 2, 3], 4, 4, [1, 2, 3]),  # fewer kept than points: all of them
        ([1, 2, 3, 4, 5], 6, None, [1, 2, 3, 4, 5]),  # --curve alone: every kept checkpoint
        ([1, 2, 3], 4, 1, []),  # one point: the last epoch only
    ],
)
def test_curve_points_pick_n_evenly_spaced_checkpoints(tmp_path, kept, epochs, points, expected):
    for e in [*kept, epochs]:  # the last epoch's checkpoint is the main eval, never a curve point
        (tmp_path / f"epoch-{e:04d}.safetensors").touch()
    assert curve_epochs(tmp_path, epochs, points) == expected


# ---------------------------------------------------------------------------------------------
# Acceptance 1 with real training and probing on tiny settings (8 runs of 2 steps each)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AFFSSL_CACHE", str(out.parent / "cache"))
        result = runner.invoke(app, [*ACCEPTANCE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_acceptance_command_writes_results_summary_and_plots(sweep):
    out, output = sweep
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert sorted({r["variant"] for r in rows}) == ["simclr/affine-scale", "simclr/affine-scale+shear",
                                                    "simclr/affine-shear", "simclr/base"]  # fmt: skip
    assert {r["seed"] for r in rows} == {"0", "1"} and all(float(r["linear-digits"]) > 0 for r in rows)
    assert all(float(r["wall_s"]) > 0 and float(r["img_per_s"]) > 0 and int(r["params_total"]) > 0 for r in rows)
    assert {r["affine"] for r in rows if r["variant"] == "simclr/base"} == {"false"}
    summary = (out / "summary.md").read_text()
    assert "mean ± 95 % CI" in summary and "p vs base" in summary and "p vs all" in summary
    table = [line for line in summary.splitlines() if line.startswith("| simclr/")]
    assert len(table) == 4 and all(" ± " in line and "| 2 |" in line for line in table)
    assert table[1].split("|")[5].strip() not in ("", "—")  # a p-value against the baseline
    for png in ("variants-linear-digits.png", "cost.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert output.count("done in") == 8 and "linear-digits (top-1 %)" in output


def test_calling_the_finished_ablation_again_runs_nothing(sweep, monkeypatch):
    out, _ = sweep
    monkeypatch.setattr(engine, "pretrain", _never)
    monkeypatch.setattr(affssl.eval, "evaluate_linear", _never)
    result = runner.invoke(app, [*ACCEPTANCE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped (finished)") == 8


# ---------------------------------------------------------------------------------------------
# The CIFAR-10 study's machinery end to end, on tiny digits: floor, base, + affine and equal time;
# linear, kNN and equivariance probes; curves; Holm-adjusted p; plots


def test_study_command_floor_match_time_all_probes_and_curves(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "study"
    argv = ["ablate", "--components", "scale,shear", "--subsets", "together", "--base", "simclr", "--seeds", "2",
            "--set", "backbone.width=4", "--set", "data.image_size_px=8", "--batch-size", "32", "--limit", "32",
            "--epochs", "2", "--device", "cpu", "--match-time", "--eval", "linear,knn,affine", "--curve-points", "2",
            *PROBE, "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    summary = (out / "summary.md").read_text()
    for name in ("simclr/floor", "simclr/base", "simclr/affine-scale+shear (all)", "simclr/base-equal-time"):
        assert f"| {name} | 2 |" in summary
    assert "Holm p vs base" in summary and "Holm p vs equal time" in summary
    reference = next(line for line in summary.splitlines() if line.startswith("| simclr/affine-scale+shear (all) |"))
    cells = [c.strip() for c in reference.split("|")[1:-1]]
    assert cells[6] != "—" and float(cells[6]) >= float(cells[5])  # Holm p (a family of one: equal to p)
    assert cells[8] != "—"  # Holm p against the equal-time base
    assert "R² per component" in summary and "| simclr | scale |" in summary
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    # Δ vs floor: the difference of the per-seed means, written out from results.csv
    linear = lambda v: [float(r["linear-digits"]) for r in rows if r["variant"] == v]  # noqa: E731
    floor_row = next(line for line in summary.splitlines() if line.startswith("| simclr/floor |"))
    floor_cells = [c.strip() for c in floor_row.split("|")[1:-1]]
    assert floor_cells[3] == "—" and floor_cells[9] == "—"  # the floor is compared with nothing
    assert len(linear("simclr/affine-scale+shear")) == len(linear("simclr/floor")) == 2
    gain = sum(linear("simclr/affine-scale+shear")) / 2 - sum(linear("simclr/floor")) / 2
    assert float(cells[3].split(" ± ")[0]) == pytest.approx(gain, abs=0.0051)  # csv holds 4 decimals
    kinds = {r["variant"]: r["kind"] for r in rows}
    assert kinds["simclr/floor"] == "floor" and kinds["simclr/base-equal-time"] == "equal-time"
    assert all(r["epochs"] == "0" for r in rows if r["kind"] == "floor")
    assert all(float(r["time_ratio"]) > 0 for r in rows if r["kind"] == "equal-time")
    assert all(r["knn-digits-k20"] and r["affine-digits-r2-scale"] for r in rows)
    for png in ("curve.png", "r2-affine-digits.png", "variants-linear-digits.png", "cost.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "simclr/base/seed-0/curve/epoch-0001/eval/linear-digits.json").is_file()  # 2 curve points


# ---------------------------------------------------------------------------------------------
# --jobs: several runs at once, each in its own process


def test_jobs_run_the_same_runs_as_one_at_a_time_and_wait_for_equal_time_references(tmp_path, monkeypatch):
    from affssl.ablate.parallel import worker_threads

    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    argv = ["ablate", "--components", "scale", "--subsets", "together", "--base", "simclr", "--seeds", "2",
            "--set", "backbone.width=4", "--set", "data.image_size_px=8", "--batch-size", "32", "--limit", "32",
            "--epochs", "2", "--device", "cpu", "--match-time", "--eval", "linear,knn", *PROBE]  # fmt: skip
    parallel = runner.invoke(app, [*argv, "--jobs", "2", "--out", str(tmp_path / "jobs")])
    assert parallel.exit_code == 0, parallel.output
    assert parallel.output.count("done in") == 8
    threads = torch.get_num_threads()
    try:  # the workers' threads: the same arithmetic, bit for bit
        sequential = runner.invoke(app, [*argv, "--set", f"train.threads={worker_threads(2)}", "--out",
                                         str(tmp_path / "one")])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert sequential.exit_code == 0, sequential.output

    def rows(folder: Path) -> dict[str, dict]:
        with open(folder / "results.csv") as f:
            return {r["run"]: r for r in csv.DictReader(f)}

    jobs, one = rows(tmp_path / "jobs"), rows(tmp_path / "one")
    assert jobs.keys() == one.keys() and len(jobs) == 8
    for run, row in jobs.items():
        if row["kind"] != "equal-time":  # its epochs come from measured times, which differ between calls
            for metric in ("linear-digits", "knn-digits-k20", "final_loss", "epochs"):
                assert row[metric] == one[run][metric], (run, metric)
    record = json.loads((tmp_path / "jobs/simclr/base/seed-0/eval/knn-digits.json").read_text())
    assert record["options"]["threads"] == worker_threads(2)  # a worker probes on its share
    for seed in (0, 1):  # an equal-time run started after its references finished: its epochs are theirs
        folder = tmp_path / "jobs" / f"simclr/base-equal-time/seed-{seed}"
        match = json.loads((folder / "match.json").read_text())
        assert match["epochs"] == max(1, round(2 * match["t_affine_s"] / match["t_base_s"]))
        assert RunSpec.model_validate_json((folder / runs.SPEC).read_text()).train.epochs == match["epochs"]

    again = runner.invoke(app, [*argv, "--jobs", "2", "--out", str(tmp_path / "jobs")])
    assert again.exit_code == 0 and again.output.count("skipped (finished)") == 8


def test_jobs_below_one_is_refused_in_one_line():
    result = runner.invoke(app, ["ablate", "--components", "scale", "--jobs", "0"])
    assert result.exit_code == 2 and "--jobs" in result.output


def test_curves_start_at_epoch_0_from_the_floor_and_count_their_seeds():
    from affssl.ablate.plots import curve_means
    from affssl.ablate.results import CurvePoint, Row

    variant = ab.variants(ab.make_ablation(default_base="simclr", first_seed=0, components="scale"))[0]
    rows = [Row(variant, s, {}, 0.0, 0.0, curve=[CurvePoint(1, 10.0 + s, 30.0 + s), CurvePoint(2, 20.0, 40.0)])
            for s in range(2)] + [Row(variant, 2, {}, 0.0, 0.0, curve=[CurvePoint(1, 12.0, 32.0)])]  # fmt: skip
    points = curve_means(rows, start=[20.0, 22.0, 24.0])
    assert points[0][:3] == (0, 0.0, 22.0) and points[0][4] == 3
    assert points[0][3] == pytest.approx(stats.t.ppf(0.975, 2) * 2.0 / math.sqrt(3))
    assert points[1][:3] == (1, 11.0, 31.0) and points[1][4] == 3
    assert points[2][:3] == (2, 20.0, 40.0) and points[2][4] == 2  # one seed stopped at epoch 1
    assert curve_means(rows)[0][0] == 1  # no floor: the curve starts at the first probed epoch


# ---------------------------------------------------------------------------------------------
# --objectives: the auxiliary objectives as the study axis


def test_objectives_plan_one_variant_each_and_an_equal_time_base_per_objective():
    ablation = ab.make_ablation(default_base="simclr", first_seed=0, bases="simclr,byol", seeds=2, floor=True,
                                match_time=True, objectives="care,affine,augself,rotation")  # fmt: skip
    assert ablation.objectives == ("affine", "augself", "rotation", "care")  # AUX order
    per_base = ["floor", "base", "affine", "augself", "rotation", "care", "base-equal-time-affine",
                "base-equal-time-augself", "base-equal-time-rotation", "base-equal-time-care"]  # fmt: skip
    assert [v.name for v in ab.variants(ablation)] == [f"{b}/{k}" for b in ("simclr", "byol") for k in per_base]
    planned = ab.plan(ablation, build)
    on = lambda r: [n for n in ("affine", "augself", "rotation", "care") if getattr(r.spec, n).enabled]  # noqa: E731
    for r in planned:
        assert on(r) == ([r.variant.objective] if r.variant.objective else [])  # exactly its own objective
        assert r.variant.baseline == (r.variant.objective is None)
    equal = [r for r in planned if r.variant.kind == "equal-time"]
    assert {r.variant.matched for r in equal} == {"affine", "augself", "rotation", "care"} and len(equal) == 16
    from affssl.ablate.study import references

    for r in equal:  # each equal-time base is measured against its own objective's run of the same base and seed
        base, other = references(r, planned)
        assert (base.variant.name, base.seed) == (f"{r.variant.base}/base", r.seed)
        assert (other.variant.objective, other.variant.base, other.seed) == (r.variant.matched, r.variant.base, r.seed)


@pytest.mark.parametrize(
    "options",
    [{"objectives": "affine,jigsaw"}, {"objectives": "care,care"}, {"objectives": "care", "components": "scale"},
     {"objectives": "care", "preset": "main"}, {"objectives": "care", "axes": {"views": "1,2"}},
     {"objectives": "care", "subsets": "all"}],
)  # fmt: skip
def test_bad_objective_studies_are_user_errors(options):
    with pytest.raises(UserError):
        ab.make_ablation(default_base="simclr", first_seed=0, **options)


def test_objective_equal_time_runs_get_their_own_objectives_time(tmp_path, fakes):
    f = fakes()  # fake epochs: base 2 s, + affine 3 s, + augself 4 s (at half the base's img/s)
    argv = ["ablate", "--objectives", "affine,augself", "--base", "simclr", "--seeds", "2", "--epochs", "2",
            "--no-floor", "--match-time", "--out", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    epochs = {o: RunSpec.model_validate_json((tmp_path / f"simclr/base-equal-time-{o}/seed-0/spec.json").read_text())
              .train.epochs for o in ("affine", "augself")}  # fmt: skip
    assert epochs == {"affine": 3, "augself": 4}  # round(2 × 1.5), round(2 × 2)
    assert len(f.trained) == 2 * 5
    with open(tmp_path / "results.csv") as fh:
        rows = {(r["variant"], r["seed"]): r for r in csv.DictReader(fh)}
    assert rows[("simclr/augself", "0")]["objective"] == "augself"
    assert rows[("simclr/base-equal-time-augself", "1")]["objective"] == "augself"
    assert float(rows[("simclr/augself", "0")]["s_per_step"]) == pytest.approx(2 * float(rows[("simclr/base", "0")]
                                                                                        ["s_per_step"]))  # fmt: skip
    summary = (tmp_path / "summary.md").read_text()
    augself = next(line for line in summary.splitlines() if line.startswith("| simclr/augself |"))
    cells = [c.strip() for c in augself.split("|")[1:-1]]
    assert "s/step vs base" in summary and cells[-1] == "2.00×" and cells[8] != "—"  # Holm p vs its equal time
    assert "objectives: affine, augself" in summary


def test_objectives_study_on_tiny_digits_writes_profiles_costs_and_the_tradeoff_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFSSL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "objectives"
    argv = ["ablate", "--objectives", "augself,rotation", "--base", "simclr", "--seeds", "1", "--no-floor",
            "--match-time", "--eval", "linear,equivariance", *TINY, *PROBE, "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    with open(out / "results.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["simclr/augself", "simclr/base", "simclr/base-equal-time-augself",
                            "simclr/base-equal-time-rotation", "simclr/rotation"]  # fmt: skip
    profile = ("equivariance-digits-affine-r2", "equivariance-digits-affine-r2-shear", "equivariance-digits-crop-r2",
               "equivariance-digits-colour-r2", "equivariance-digits-rotation-acc")  # fmt: skip
    assert all(r[m] != "" for r in rows.values() for m in profile)  # every variant's profile
    assert all(float(r["s_per_step"]) > 0 and float(r["linear-digits"]) > 0 for r in rows.values())
    summary = (out / "summary.md").read_text()
    assert "## Equivariance profile" in summary and "| simclr/rotation | 1 |" in summary
    assert "## equivariance-digits-rotation-acc (4-way rotation top-1 %)" in summary
    assert "Holm p vs equal time" in summary and "s/step vs base" in summary
    for png in ("tradeoff.png", "variants-equivariance-digits-crop-r2.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "simclr/rotation/seed-0/eval/equivariance-digits.json").read_text())
    assert record["result"]["heads"] == ["rotation"]
    # each head as trained, in the CSV and the heads table; only the variant that has the head has a value
    acc = float(rows["simclr/rotation"]["equivariance-digits-head-rotation-acc"])
    assert acc == pytest.approx(record["result"]["rotation"]["head_acc_pct_batch"], abs=1e-4)
    assert rows["simclr/base"]["equivariance-digits-head-rotation-acc"] == ""
    assert rows["simclr/augself"]["equivariance-digits-head-crop-r2"] != ""
    assert "## Own heads, as trained" in summary and f"| simclr/rotation | 1 | — | — | {acc:.2f} ± " in summary
