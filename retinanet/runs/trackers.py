"""Where a run's numbers go besides the log: ``steps.csv`` always, TensorBoard or MLflow on request.

``steps.csv`` (in the run folder) has one row per training step: ``iteration`` (1-based over the
run), ``epoch``, ``step`` (within the epoch), ``loss``, ``cls_loss``, ``box_loss``, ``lr`` (the
rate of that step) and ``seconds`` (since the start of this process's training). The per-epoch
records stay in ``metrics.jsonl``; the curves draw both.

``--logger tensorboard`` writes event files to ``{run}/tensorboard/``: ``train/loss``,
``train/cls_loss``, ``train/box_loss`` and ``train/lr`` by iteration; ``epoch/loss``,
``epoch/cls_loss``, ``epoch/box_loss``, ``epoch/images_per_second`` and ``val/AP`` ... ``val/ARl``
(COCOeval's 12 numbers) by epoch; the picture of predictions after each evaluation
(``val/predictions``); the resolved configuration as text (``config``). ``--logger mlflow`` logs
the same scalars, the flags as parameters and the picture as an artifact to MLflow's tracking URI
(``MLFLOW_TRACKING_URI``; MLflow's default otherwise), where mlflow is installed; a resumed run
is a new MLflow run of the same name.

A resumed run first drops the rows and events after the step it resumes from, so the files read
as one uninterrupted run.
"""
import csv
import importlib
import json
import os

from retinanet.evaluation.coco_eval import COCO_STAT_NAMES
from retinanet.util.io import write_text

LOGGER_CHOICES = ("tensorboard", "mlflow")
STEPS_FILE = "steps.csv"
STEP_COLUMNS = ("iteration", "epoch", "step", "loss", "cls_loss", "box_loss", "lr", "seconds")
STEP_SCALARS = ("loss", "cls_loss", "box_loss", "lr")
EPOCH_SCALARS = ("loss", "cls_loss", "box_loss", "images_per_second")
# The module each tracker imports, checked before a run starts.
MODULES = {"tensorboard": "torch.utils.tensorboard", "mlflow": "mlflow"}
INSTALL = {"tensorboard": "pip install tensorboard (or pip install -e '.[track]')",
           "mlflow": "pip install mlflow"}


class MissingTrackerError(ImportError):
    """--logger names a tracker whose package is not installed; the message says how to install it."""


class TrackerError(RuntimeError):
    """A tracker could not start (MLflow's tracking URI refused the run, say); the message says which."""


def _import(logger, module):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingTrackerError(f"--logger {logger} needs the {logger} package, which is not installed "
                                  f"({error}): {INSTALL[logger]}") from None


def check_loggers(names):
    """Raise MissingTrackerError before a run starts when a requested tracker cannot be imported."""
    for name in names or ():
        if name not in MODULES:
            raise ValueError(f"unknown --logger {name!r}; choose from {', '.join(LOGGER_CHOICES)}")
        _import(name, MODULES[name])


def _evaluation_scalars(record):
    """{COCO name: value} of an epoch record's evaluation, without COCOeval's -1 (nothing to score)."""
    return {name: value for name, value in (record.get("coco") or {}).items()
            if name in COCO_STAT_NAMES and value >= 0}


class StepsCsv:
    """``steps.csv``: one row per training step, appended and flushed as the run goes."""

    def __init__(self, path):
        self.path = path

    def truncate(self, last_iteration):
        """Keep the rows up to ``last_iteration`` (a resume starts after it)."""
        if not os.path.exists(self.path):
            return
        kept = [row for row in read_steps(self.path) if row["iteration"] <= last_iteration]
        write_text(self.path, "".join([_HEADER] + [_line(row) for row in kept]))

    def append(self, row):
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        with open(self.path, "a", newline="") as stream:
            stream.write((_HEADER if new else "") + _line(row))


_HEADER = ",".join(STEP_COLUMNS) + "\n"


def _line(row):
    """A row of steps.csv: floats as repr (exact round trip), integers as they are."""
    return ",".join(repr(float(row[name])) if isinstance(row[name], float) else str(row[name])
                    for name in STEP_COLUMNS) + "\n"


def read_steps(path):
    """The rows of a steps.csv as dicts of numbers; a torn last line (a crash mid-write) is ignored."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, newline="") as stream:
        for row in csv.DictReader(stream):
            try:
                rows.append({name: (int(row[name]) if name in ("iteration", "epoch", "step") else float(row[name]))
                             for name in STEP_COLUMNS})
            except (TypeError, ValueError):
                break
    return rows


class TensorBoardTracker:
    def __init__(self, run_path, config, purge_step):
        tensorboard = _import("tensorboard", MODULES["tensorboard"])
        self.writer = tensorboard.SummaryWriter(os.path.join(run_path, "tensorboard"), purge_step=purge_step)
        if purge_step is None:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1, sort_keys=True, default=str) + "\n```")

    def step(self, row):
        for name in STEP_SCALARS:
            self.writer.add_scalar(f"train/{name}", row[name], row["iteration"])

    def epoch(self, record):
        for name in EPOCH_SCALARS:
            if name in record:
                self.writer.add_scalar(f"epoch/{name}", record[name], record["epoch"])
        for name, value in _evaluation_scalars(record).items():
            self.writer.add_scalar(f"val/{name}", value, record["epoch"])
        self.writer.flush()

    def image(self, path, epoch):
        import numpy as np
        from PIL import Image
        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        self.writer.add_image("val/predictions", pixels, epoch, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


class MlflowTracker:
    def __init__(self, run_path, config, purge_step):
        self.mlflow = _import("mlflow", MODULES["mlflow"])
        self.mlflow.start_run(run_name=os.path.basename(os.path.normpath(run_path)))
        if purge_step is None:
            self.mlflow.log_params({key: str(value)[:250] for key, value in config.items()})

    def step(self, row):
        self.mlflow.log_metrics({f"train_{name}": row[name] for name in STEP_SCALARS}, step=row["iteration"])

    def epoch(self, record):
        values = {f"epoch_{name}": record[name] for name in EPOCH_SCALARS if name in record}
        values.update({f"val_{name}": value for name, value in _evaluation_scalars(record).items()})
        self.mlflow.log_metrics(values, step=record["epoch"])

    def image(self, path, epoch):
        self.mlflow.log_artifact(path, artifact_path=f"predictions/epoch{epoch}")

    def close(self):
        self.mlflow.end_run()


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}


class Trackers:
    """steps.csv and the requested trackers of one run (main process only).

    resume_iteration: the iteration a resumed run continues after (None for a new run): later rows
    and events are dropped first."""

    def __init__(self, run_path, loggers, config, resume_iteration=None):
        self.steps = StepsCsv(os.path.join(run_path, STEPS_FILE))
        if resume_iteration is not None:
            self.steps.truncate(resume_iteration)
        purge = None if resume_iteration is None else resume_iteration + 1
        self.trackers = []
        try:
            for name in loggers or ():
                try:
                    self.trackers.append(TRACKERS[name](run_path, config, purge))
                except MissingTrackerError:
                    raise
                except Exception as error:
                    raise TrackerError(f"--logger {name} could not start: {type(error).__name__}: {error}") from error
        except BaseException:
            self.close()
            raise

    def step(self, row):
        self.steps.append(row)
        for tracker in self.trackers:
            tracker.step(row)

    def epoch(self, record):
        for tracker in self.trackers:
            tracker.epoch(record)

    def image(self, path, epoch):
        if os.path.exists(path):
            for tracker in self.trackers:
                tracker.image(path, epoch)

    def close(self):
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
