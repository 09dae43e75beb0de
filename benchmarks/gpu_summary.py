"""Collect the JSON files of benchmarks/gpu_check.sh into OUT/summary.json and OUT/summary.md. Not a test.

python benchmarks/gpu_summary.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(folder: Path) -> None:
    device = (folder / "device.txt").read_text().strip() if (folder / "device.txt").is_file() else "unknown"
    found = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem != "summary"}
    tests = (folder / "tests.log").read_text().strip().splitlines() if (folder / "tests.log").is_file() else []
    lines = [f"# GPU check on {device}", "", f"CUDA-marked tests: {tests[-1] if tests else 'not run'}", ""]
    lines += ["| model | engine img/s w/o module | with module | best bare fwd+bwd img/s | ratio w/o | ratio with "
              "| step time with / without |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name in ("r18-throughput", "r50-throughput"):
        for r in found.get(name, {}).get("results", []):
            best = r["rate"][r["best_bare"]]
            t = {k: sorted(r["times"][k])[len(r["times"][k]) // 2] for k in ("with", "without")}
            rate = r["rate"]
            lines.append(f"| {name[:3]} b{r['batch']} ({r['policy']}) | {rate['without']:,.0f} | {rate['with']:,.0f} "
                         f"| {best:,.0f} ({r['best_bare']}) | {rate['without'] / best:.2f} | {rate['with'] / best:.2f} "
                         f"| {t['with'] / t['without']:.2f} |")  # fmt: skip
    lines += ["", "| model | affine | peer img/s | affssl img/s | affssl / peer |", "|---|---|---:|---:|---:|"]
    for name, r in found.items():
        if "peer" in name:
            rate, on = r["img_per_s"], "on" if r["affine"] else "off"
            lines.append(f"| {name[:3]} b{r['batch']} | {on} | {rate['peer']:,.0f} | {rate['affssl']:,.0f} "
                         f"| {r['ratio']:.2f} |")  # fmt: skip
    if chunks := found.get("chunks-train"):
        m = chunks["summary"]
        lines += ["", "| storage | training img/s | peak RSS MiB |", "|---|---:|---:|"]
        lines += [f"| {s} | {v['img_per_s']:,.0f} | {v['peak_rss_mib']:,.0f} |" for s, v in m.items()]
        both = {"chunks", "tensor"} <= m.keys()
        ratio = m["chunks"]["img_per_s"] / m["tensor"]["img_per_s"] if both else float("nan")
        decode = chunks["decode_img_per_s"]
        lines += ["", f"chunks / tensor: {ratio:.2f}; nvJPEG decode_jpeg batches: {decode:,.0f} img/s"]
    (folder / "summary.json").write_text(json.dumps({"device": device, "results": found}, indent=2) + "\n")
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
