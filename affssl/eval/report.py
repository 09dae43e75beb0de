"""Rich tables of evaluation records (the dicts `affssl.eval.evaluate_*` return); the CLI prints them."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text


def table(record: dict) -> Group:
    """The protocol's numbers in a table, then lines saying where they came from."""
    build = {"linear": _linear, "knn": _knn, "affine": _affine, "equivariance": _equivariance}[record["protocol"]]
    t = Table(header_style="bold")
    build(t, record["result"])
    return Group(Text(_title(record), style="bold"), t, Text(_caption(record), style="dim"))


def _title(r: dict) -> str:
    d = r["dataset"]
    kind = "transfer to " if d["transfer"] else ""
    names = {"linear": "linear probe", "knn": "weighted kNN", "affine": "equivariance probe",
             "equivariance": "equivariance profile"}  # fmt: skip
    return f"{names[r['protocol']]} — {kind}{d['name']} ({d['n_train']} train / {d['n_test']} test)"


def _caption(r: dict) -> str:
    c, d, b = r["checkpoint"], r["dataset"], r["backbone"]
    lines = [
        f"checkpoint {c['path']} (sha256 {c['sha256'][:12]}…, epoch {c['epoch']})",
        f"{b['name']} width {b['width']}, {b['image_size_px']} px; seeds {r['seeds']}; "
        f"{_cache(r['cache'])}; {r['timing_s']['total']:.1f} s",
    ]
    if d["test_carved"]:
        lines.append("no test split on disk: a seeded stratified 20 % of train is the test split")
    if r["protocol"] in ("affine", "equivariance") and r["spec"] is not None:
        batch = r["spec"]["train"]["batch_size"]
        lines.append(f"own head as trained: each set of test images encoded in batches of {batch} normalised by "
                     "their own statistics, as in training; eval mode: BatchNorm's running statistics")  # fmt: skip
    lines.append(f"written to {r['path']}")
    return "\n".join(lines)


def _cache(state: dict[str, str]) -> str:
    """'hit' → read from the cache, 'miss' → computed (and stored), 'off' → computed, --no-cache."""
    words = {"hit": "from cache", "miss": "computed", "off": "computed (--no-cache)"}
    values = list(state.values())
    counts = {words[v]: values.count(v) for v in dict.fromkeys(values)}
    return ", ".join(f"{n} {w}" for w, n in counts.items()) + f" of {len(values)} feature sets"


def _pm(mean: float, ci: float | None) -> str:
    return f"{mean:.2f}" if ci is None else f"{mean:.2f} ± {ci:.2f}"


def _linear(t: Table, res: dict) -> None:
    t.add_column("trial")
    t.add_column("seed", justify="right")
    t.add_column("chosen C", justify="right")
    t.add_column("val top-1 %", justify="right")
    t.add_column("test top-1 %", justify="right")
    for i, tr in enumerate(res["trials"]):
        val = max(tr["val_acc_pct"])
        note = f" ({tr['not_converged']} fits hit max_iter)" if tr["not_converged"] else ""
        t.add_row(str(i + 1), str(tr["seed"]), f"{tr['C']:.3g}", f"{val:.2f}{note}", f"{tr['test_acc_pct']:.2f}")
    t.add_section()
    ci = "95 % CI" if res["ci95_pct"] is not None else "one trial"
    t.add_row("mean", "", "", "", f"[bold]{_pm(res['top1_pct'], res['ci95_pct'])}[/] ({ci})")


def _knn(t: Table, res: dict) -> None:
    t.add_column("k", justify="right")
    t.add_column("temperature", justify="right")
    t.add_column("test top-1 %", justify="right")
    for k in res["ks"]:
        t.add_row(str(k), f"{res['temperature']:g}", f"[bold]{res['top1_pct'][str(k)]:.2f}[/]")


def _affine(t: Table, res: dict) -> None:
    t.add_column("component")
    t.add_column("probe R² (test)", justify="right")
    t.add_column("own head R², eval mode", justify="right")
    t.add_column("own head R², as trained", justify="right")
    head, batch = res["r2_head"] or {}, res.get("r2_head_batch") or {}
    for name, r2 in res["r2"].items():
        t.add_row(name, f"[bold]{r2:.3f}[/]", _cell(head, name, "{:.3f}"), _cell(batch, name, "{:.3f}"))
    if res["head_note"]:
        t.add_section()
        t.add_row(res["head_note"], "", "", "")


def _cell(values: dict, name: str, fmt: str) -> str:
    return fmt.format(values[name]) if name in values else "—"


def _equivariance(t: Table, res: dict) -> None:
    """One row per probed quantity: affine components, AugSelf's Δ types, rotation; probe and own head."""
    t.add_column("task")
    t.add_column("target")
    t.add_column("probe (test)", justify="right")
    t.add_column("own head, eval mode", justify="right")
    t.add_column("own head, as trained", justify="right")
    affine, augself, rotation = res["affine"], res["augself"], res["rotation"]
    head, batch = affine["r2_head"] or {}, affine.get("r2_head_batch") or {}
    for name, r2 in affine["r2"].items():
        t.add_row(
            "affine", f"{name} R²", f"[bold]{r2:.3f}[/]", _cell(head, name, "{:.3f}"), _cell(batch, name, "{:.3f}")
        )
    t.add_section()
    head, batch = augself["r2_head"] or {}, augself.get("r2_head_batch") or {}
    for name, r2 in augself["r2"].items():
        t.add_row("augself", f"{name} Δ R²", f"[bold]{r2:.3f}[/]", _cell(head, name, "{:.3f}"),
                  _cell(batch, name, "{:.3f}"))  # fmt: skip
    t.add_section()
    own = {"eval": rotation["head_acc_pct"], "batch": rotation.get("head_acc_pct_batch")}
    own = {k: v for k, v in own.items() if v is not None}
    target = f"4-way accuracy % (chance {rotation['chance_pct']:.0f})"
    t.add_row("rotation", target, f"[bold]{rotation['acc_pct']:.2f}[/]", _cell(own, "eval", "{:.2f}"),
              _cell(own, "batch", "{:.2f}"))  # fmt: skip
    t.add_section()
    t.add_row("heads", ", ".join(res["heads"]) or "none: no trained head for these tasks", "", "", "")
