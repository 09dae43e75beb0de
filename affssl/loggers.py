"""TensorBoard, MLflow and W&B beside metrics.jsonl (`train.loggers`), each an optional extra.

metrics.jsonl stays the source: every record appended to it goes to each logger as scalars named
`<kind>/<field>` (step/loss, epoch/monitor_knn_top1, params/total, …) at the record's `step`
(0 for the parameter counts), so every logger shows the same numbers at the same steps. The
resolved spec goes as hyper-parameters (dotted field names). Where each writes:

    RUN/tensorboard/   TensorBoard event files (`tensorboard --logdir RUN/tensorboard`)
    MLflow             MLflow's tracking URI: MLFLOW_TRACKING_URI, else its default (sqlite:///mlflow.db)
    RUN/wandb/         W&B's run folder; WANDB_MODE=offline keeps it local until `wandb sync`
    RUN/loggers.json   each logger's run (MLflow's URI and run id, W&B's run id): --resume continues them

On resume TensorBoard starts a new event file that purges what the first one logged after the
checkpoint's step; MLflow and W&B keep such points (they cannot delete them), so after a run
stopped inside an epoch their history may hold two values for the replayed steps.
A logger that fails while training warns once and is dropped: watching never stops training.
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from affssl.errors import UserError
from affssl.spec import RunSpec, flatten

IDS = "loggers.json"
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # logger → module it needs
SHORT_CHARS = 100  # of a logger's error message in our one line (--debug shows the whole traceback)


def require(names: tuple[str, ...] | list[str]) -> None:
    """Raise one line naming the extra to install for the first logger whose library is missing."""
    for name in names:
        if find_spec(MODULES[name]) is None:
            raise UserError(f"train.loggers names {name} but {MODULES[name]} is not installed; "
                            f"pip install 'affssl[{name}]', or drop {name} from train.loggers")  # fmt: skip


def scalars(record: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """A metrics.jsonl record → (its step, {kind/field: value}) for every number in it but the step."""
    kind = record.get("kind", "record")
    numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return int(record.get("step", 0)), {f"{kind}/{k}": float(v) for k, v in numbers.items() if k != "step"}


def hyperparameters(spec: RunSpec) -> dict[str, str | int | float | bool]:
    """The resolved spec as {dotted field: value}; lists and None as their JSON text."""
    flat = flatten(json.loads(spec.model_dump_json()))
    return {k: v if isinstance(v, str | int | float | bool) else json.dumps(v) for k, v in flat.items()}


def short(error: Exception, limit: int = SHORT_CHARS) -> str:
    """A logger library's exception in a few words: its type and the first sentence of its first line."""
    text = " ".join(str(error).split("\n")[0].split())
    text = text.split(". ")[0].split("; ")[0].rstrip(".")
    text = text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class TensorBoard:
    def __init__(self, run: Path, spec: RunSpec, state: dict, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # purge_step: TensorBoard's readers drop what an earlier writer logged at or after it
        self.writer = SummaryWriter(str(run / "tensorboard"), purge_step=None if resume_step is None else
                                    resume_step + 1)  # fmt: skip
        self.state = {"logdir": str(run / "tensorboard")}
        if resume_step is None:
            for summary in hparams(hyperparameters(spec), {}):
                self.writer.file_writer.add_summary(summary)

    def log(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step, new_style=True)

    def close(self, ok: bool) -> None:
        self.writer.close()


class MLflow:
    """MLflow's own tracking URI (MLFLOW_TRACKING_URI, else its default, sqlite:///mlflow.db in the working
    folder); a resumed run goes back to the URI and run it started with."""

    def __init__(self, run: Path, spec: RunSpec, state: dict, resume_step: int | None):
        import mlflow
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = state.get("tracking_uri") or mlflow.get_tracking_uri()
        self.client = MlflowClient(uri)
        run_id = state.get("run_id")
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "affssl")
            found = self.client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.client.create_experiment(name)
            run_id = self.client.create_run(experiment, run_name=run.name).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.id, self.state = run_id, {"tracking_uri": uri, "run_id": run_id}
        logged = self.client.get_run(run_id).data.params
        flat = {k: str(v) for k, v in hyperparameters(spec).items()}
        params = [Param(k, v) for k, v in flat.items() if k not in logged]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(run_id, params=params[start : start + 100])
        for k in (k for k, v in flat.items() if k in logged and logged[k] != v):  # MLflow never changes a parameter
            self.client.set_tag(run_id, f"resumed.{k}", flat[k])  # a field --resume changed (train.epochs)

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.id, "FINISHED" if ok else "FAILED")


class Wandb:
    """W&B's own settings (WANDB_MODE, WANDB_PROJECT — default affssl —, WANDB_ENTITY, login); the run's
    files under RUN/wandb/; a resumed run continues the W&B run of the same id."""

    def __init__(self, run: Path, spec: RunSpec, state: dict, resume_step: int | None):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "affssl"),
            name=run.name,
            id=state.get("run_id"),  # None: W&B draws one
            resume="allow",
            dir=str(run),
            config=hyperparameters(spec),
            allow_val_change=True,  # a field --resume may change (train.epochs)
            settings=wandb.Settings(console="off"),  # leave the progress bar's terminal alone
        )
        self.state = {"run_id": self.run.id}

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


KINDS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": Wandb}


class Loggers:
    """The run's loggers (none when train.loggers is empty); open them on rank 0 only."""

    def __init__(self, run: Path, spec: RunSpec, resume_step: int | None):
        require(spec.train.loggers)
        self.run = run
        path = run / IDS
        states = json.loads(path.read_text()) if resume_step is not None and path.is_file() else {}
        self.open: dict[str, Any] = {}
        try:
            for name in spec.train.loggers:
                self.open[name] = KINDS[name](run, spec, states.get(name, {}), resume_step)
        except Exception as error:
            self.close(ok=False)
            raise UserError(f"could not start the {name} logger ({short(error)}); fix its settings (--debug shows "
                            f"the whole error) or drop {name} from train.loggers") from error  # fmt: skip
        if self.open:
            path.write_text(json.dumps(states | {k: v.state for k, v in self.open.items()}, indent=2) + "\n")

    def log(self, record: dict[str, Any]) -> None:
        """Send one metrics.jsonl record to every logger; one that fails warns once and is dropped."""
        step, values = scalars(record)
        for name, logger in list(self.open.items()):
            try:
                logger.log(step, values)
            except Exception as error:  # a logger must not end the training it watches
                print(f"warning: the {name} logger failed ({short(error)}); "
                      "it logs nothing more, metrics.jsonl goes on", file=sys.stderr)  # fmt: skip
                self.open.pop(name)

    def close(self, ok: bool = True) -> None:
        for name, logger in self.open.items():
            try:
                logger.close(ok)
            except Exception as error:  # the run's own files are written; a logger's end is not worth a failure
                print(f"warning: the {name} logger did not close ({short(error)})", file=sys.stderr)
        self.open = {}
