"""`affssl ablate`: the paper's ablations (§3), or the auxiliary objectives compared (`--objectives`), as a plan
of ordinary runs, executed restartably.

A run is finished when its last checkpoint reached spec.train.epochs and its eval records are
current; a finished run is never repeated, an interrupted one resumes from its last checkpoint (or
restarts when it has none), so a killed ablation is completed by calling it again.

Modules, each importing only those before it:
    planning  presets, variants, the plan and OUT/ablate.json
    study     the floor (untrained encoder) and the equal-time baseline's epochs
    runner    each run folder left alone, trained, resumed, restarted or evaluated
    parallel  --jobs N: several runs at once in worker processes
    results   results.csv rows from the run folders, statistics per variant
    summary   summary.md and the terminal's tables
    plots     the PNG plots
    pipeline  plan file → runs → outputs: the command's one library call
"""

from affssl.ablate.pipeline import Outputs, run, write_outputs
from affssl.ablate.planning import (
    ABLATE_FORMAT,
    AXES,
    PAPER_BASES,
    PLAN,
    PRESETS,
    PROTOCOLS,
    SUBSETS,
    Ablation,
    EvalSettings,
    PlannedRun,
    Preset,
    SpecBuilder,
    Variant,
    component_sets,
    make_ablation,
    plan,
    split_list,
    variants,
    write_plan,
)

__all__ = [
    "ABLATE_FORMAT",
    "AXES",
    "PAPER_BASES",
    "PLAN",
    "PRESETS",
    "PROTOCOLS",
    "SUBSETS",
    "Ablation",
    "EvalSettings",
    "Outputs",
    "PlannedRun",
    "Preset",
    "SpecBuilder",
    "Variant",
    "component_sets",
    "make_ablation",
    "plan",
    "run",
    "split_list",
    "variants",
    "write_outputs",
    "write_plan",
]
