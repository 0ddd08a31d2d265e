"""Run folders, console-and-file logging and the per-epoch metrics file.

A run named ``train_depth{D}_epochs{E}_no{N}`` (N the next free number) writes
``{output_path}/{run}/`` (``config.json``, ``metrics.jsonl``, checkpoints, ``curves.png``) and
``{log_dir}/{run}.log`` (everything printed on the console, without progress bars).
"""
import json
import os
import re
import subprocess
import sys


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


def write_json(path, obj):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


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
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        for record in kept:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    os.replace(temporary, path)


def run_command(command, cwd=None):
    """Run one step of a scripted pipeline, echoing it; stop the pipeline if it fails."""
    print("$ " + " ".join(command), flush=True)
    completed = subprocess.run(command, cwd=cwd)
    if completed.returncode != 0:
        raise SystemExit(f"stopped: '{' '.join(command[1:3])}' exited with status {completed.returncode}")
