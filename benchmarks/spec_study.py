"""Spec files side by side: each NAME=SPEC is a variant of one base method, × seeds, with the floor and probes.

`affssl ablate` varies the affine module over one spec; this varies the spec itself (an optimizer, a
schedule) and reuses ablate's runner, so every (variant, seed) is an ordinary restartable run folder
OUT/<base>/<name>/seed-<s>/ trained and probed exactly as ablate trains and probes, run `--jobs` at a
time, with the untrained encoder of the first spec as the floor (OUT/<base>/floor/). The first
variant is the reference: each other variant's Δ and Welch p in summary.md are against it.

    python benchmarks/spec_study.py adam=examples/cifar10_cpu_v2.toml \\
        lars=examples/cifar10_cpu_v2_lars.toml --base simclr --seeds 3 --eval linear,knn \\
        --eval-limit 4000 --jobs 2 --dataset /work/cifar10 --out results/cifar10-cpu-v2-lars

Writes OUT/ablate.json (the plan), OUT/results.csv (ablate's columns), OUT/summary.md and
OUT/variants-<metric>.png. Calling it again completes only what is missing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from affssl.ablate import EvalSettings, PlannedRun, Variant, make_ablation, plots, results, split_list, write_plan
from affssl.cli.options import resolve_spec
from affssl.stats import fmt, fmt_p


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+", help="NAME=SPEC (TOML file or preset); the first is the reference")
    p.add_argument("--base", required=True, help="the base method every spec is run with")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--eval", default="linear,knn")
    p.add_argument("--eval-trials", type=int, default=5)
    p.add_argument("--eval-limit", type=int)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--dataset")
    p.add_argument("--set", action="append", default=[], help="override every spec: a.b=c")
    p.add_argument("--no-floor", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args()


def plan(args: argparse.Namespace) -> tuple[list[PlannedRun], EvalSettings]:
    pairs = [v.split("=", 1) for v in args.variants]
    if any(len(p) != 2 for p in pairs) or len({n for n, _ in pairs}) != len(pairs):
        raise SystemExit("variants: give distinct NAME=SPEC pairs")
    extra = [*args.set, *([f"data.dataset={args.dataset}"] if args.dataset else [])]
    off = ("affine.enabled=false",)
    variants: list[tuple[Variant, str]] = []
    if not args.no_floor:
        variants.append((Variant(f"{args.base}/floor", args.base, (), (), off, False, "floor"), pairs[0][1]))
    for i, (name, spec) in enumerate(pairs):
        # the reference is ablate's "base" (no components); the others carry their name as a component so
        # that ablate.results compares them with it
        label = "base" if i == 0 else name
        variants.append((Variant(f"{args.base}/{label}", args.base, () if i == 0 else (name,), (), off, False), spec))
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    planned = [
        PlannedRun(v, s, resolve_spec(spec, args.base, [*extra, *v.overrides, f"train.seed={s}"]))
        for s in seeds
        for v, spec in variants
    ]
    ev = EvalSettings(protocols=split_list(args.eval), trials=args.eval_trials, limit=args.eval_limit)
    return planned, ev


def write_summary(path: Path, args: argparse.Namespace, tables: dict, n_rows: int, n_planned: int) -> None:
    names = dict(v.split("=", 1) for v in args.variants)
    first = args.variants[0].split("=", 1)[0]
    lines = [
        f"# {args.base}: spec files side by side (benchmarks/spec_study.py)",
        "",
        *(f"- {args.base}/{'base' if n == first else n}: `{s}`" for n, s in names.items()),
        f"- seeds: {args.first_seed}–{args.first_seed + args.seeds - 1}; evaluation: {args.eval}; linear-probe "
        f"trials {args.eval_trials}; probe limit {args.eval_limit or '—'}; runs finished: {n_rows} of {n_planned}",
        "- samples: one value per pretraining seed (the run's mean over its probe trials); mean ± half-width of "
        "the two-sided 95 % Student-t interval",
        f"- Δ vs {first}: difference of means against {args.base}/base (relative gain); p: Welch's two-sided "
        "t-test (scipy.stats.ttest_ind, equal_var=False)",
        "- floor: the untrained encoder of the first spec and the same seeds (BatchNorm settled; affssl.floor); "
        "Δ vs floor ± its Welch 95 % interval",
        "- train s, img/s: measured while other work shared the CPU; not comparable across variants",
    ]
    header = ("variant", "n", "mean ± 95 % CI", "Δ vs floor ± 95 % CI", f"Δ vs {first} (rel.)", "p", "train s",
              "img/s")  # fmt: skip
    for metric, stats in tables.items():
        d = 3 if metric.startswith("affine-") else 2
        lines += ["", f"## {metric} ({results.unit_label(metric)})", "", "| " + " | ".join(header) + " |",
                  "|---" + "|---:" * (len(header) - 1) + "|"]  # fmt: skip
        for s in stats:
            f, b = s.vs_floor, s.vs_base
            cells = [
                s.variant.name,
                str(s.summary.n),
                f"{fmt(s.summary.mean, d)} ± {fmt(s.summary.ci95, d)}",
                "—" if f is None else f"{fmt(f.gain, d, signed=True)} ± {fmt(f.ci95, d)}",
                "—" if b is None else f"{fmt(b.gain, d, signed=True)} ({fmt(100 * b.relative, 1, signed=True)} %)",
                "—" if b is None else fmt_p(b.p),
                f"{s.wall_s:.1f}",
                "—" if s.variant.kind == "floor" else f"{s.img_per_s:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    args = parse_args()
    planned, ev = plan(args)
    base = planned[0].variant.base
    ablation = make_ablation(default_base=base, first_seed=args.first_seed, bases=base, seeds=args.seeds,
                             eval_settings=ev, floor=not args.no_floor)  # fmt: skip
    write_plan(args.out, ablation, planned)
    t0 = time.perf_counter()

    def report(e) -> None:
        if e.phase in ("done", "skip"):
            print(f"[{e.index}/{e.total}] {e.run.folder} {e.phase} {e.seconds:.0f} s", flush=True)

    if args.jobs > 1:
        from affssl.ablate.parallel import execute_parallel

        execute_parallel(planned, args.out, ev, report, args.jobs)
    else:
        from affssl.ablate.runner import execute

        execute(planned, args.out, ev, report)
    rows = results.collect(planned, args.out, ev)
    tables = {m: results.variant_stats(planned, rows, m, "seed") for m in results.metric_names(rows)}
    results.write_csv(rows, args.out / "results.csv")
    write_summary(args.out / "summary.md", args, tables, len(rows), len(planned))
    for m, stats in tables.items():
        if stats:
            plots.plot_variants(m, stats, args.out / f"variants-{m}.png")
    print(f"{len(rows)} of {len(planned)} runs in {args.out} ({time.perf_counter() - t0:.0f} s)")
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
