"""Run folders, console-and-file logging and the per-epoch metrics file.

A run named ``train_depth{D}_epochs{E}_no{N}`` (N the next free number) writes
``{output_path}/{run}/`` (``config.json``, ``metrics.jsonl``, checkpoints, ``curves.png``) and
``{log_dir}/{run}.log`` (everything printed on the console, without progress bars).
"""
import json
import os
import re
import sys

from retinanet.runs.checkpoint import atomic_torch_save
from retinanet.util.io import write_json, write_text


def next_run_name(output_path, log_dir, depth, epochs, prefix=""):
    """``{prefix}train_depth{D}_epochs{E}_no{N}`` with N one more than any run folder or log."""
    prefix = f"{prefix}train_depth{depth}_epochs{epochs}_no"
    pattern = re.compile(re.escape(prefix) + r"(\d+)(\.log)?$")
    taken = [0]
    for folder in (output_path, log_dir):
        if os.path.isdir(folder):
            taken += [int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m]
    return f"{prefix}{max(taken) + 1}"


class RunLog:
    """print-like callable that writes to the console and appends to a log file."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._file = open(path, "a", encoding="utf-8", buffering=1)

    def __call__(self, *parts, file=None):
        text = " ".join(str(part) for part in parts)
        print(text, file=file or sys.stdout, flush=True)
        self._file.write(text + "\n")

    def close(self):
        self._file.close()


def append_metrics(path, record):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(path):
    """All records of a metrics.jsonl file, in order; a torn last line (crash mid-write) is ignored."""
    records = []
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON object") from None
    return records


def truncate_metrics(path, last_epoch):
    """Drop records after ``last_epoch`` (a resumed run rewrites them)."""
    if not os.path.exists(path):
        return
    kept = [record for record in read_metrics(path) if record.get("epoch", 0) <= last_epoch]
    write_text(path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in kept))


class RunDirError(RuntimeError):
    """A run folder cannot be used: it holds another run, or it cannot be written."""


class RunDir:
    """One training run's files: ``{output_path}/{name}/`` and ``{log_dir}/{name}.log``.

    The folder holds ``config.json`` (every flag and a few facts), ``metrics.jsonl`` (one record
    per finished epoch), ``curves.png``, ``summary.json`` (once finished) and the checkpoints.
    """

    def __init__(self, output_path, log_dir, name):
        self.name = name
        self.path = os.path.join(output_path, name)
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.config_path = self.file("config.json")
        self.metrics_path = self.file("metrics.jsonl")
        self.summary_path = self.file("summary.json")
        self.curves_path = self.file("curves.png")

    def file(self, name):
        return os.path.join(self.path, name)

    def holds_a_run(self):
        return os.path.exists(self.metrics_path)

    def check_writable(self):
        """Create the folder and write a probe file, so an unwritable place fails now, not after an epoch.
        Raises OSError."""
        probe = self.file(".write-test")
        os.makedirs(self.path, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"0" * 4096)
        os.remove(probe)

    def claim(self, resuming):
        """Check that a new run does not land on an old one and that the folder is writable.
        Raises RunDirError with the message to show."""
        if not resuming and self.holds_a_run():
            raise RunDirError(f"{self.path} already holds a run; pick another --run_name, or continue it "
                              f"with --resume {self.file('checkpoint_last.pt')}")
        try:
            self.check_writable()
        except OSError as error:
            raise RunDirError(f"cannot write the run folder {self.path} (--output_path): "
                              f"{error.strerror or error}") from None

    def open_log(self):
        return RunLog(self.log_path)

    def write_config(self, config):
        write_json(self.config_path, config)

    def write_summary(self, summary):
        write_json(self.summary_path, summary)

    def append_metrics(self, record):
        append_metrics(self.metrics_path, record)

    def read_metrics(self):
        return read_metrics(self.metrics_path) if os.path.exists(self.metrics_path) else []

    def truncate_metrics(self, last_epoch):
        truncate_metrics(self.metrics_path, last_epoch)

    def plot_curves(self):
        from retinanet.runs.plots import plot_run_curves  # matplotlib is loaded only when plotting
        plot_run_curves(self.read_metrics(), self.curves_path, title=self.name)

    def save_checkpoint(self, state, name):
        """Write a checkpoint atomically into the run folder; returns its path."""
        path = self.file(name)
        atomic_torch_save(state, path)
        return path

    def remove(self, name):
        if os.path.exists(self.file(name)):
            os.remove(self.file(name))
