"""Run folders, console-and-file logging and the per-epoch metrics file.

A run named ``train_depth{D}_epochs{E}_no{N}`` (N the next free number) writes
``{output_path}/{run}/`` (``config.json``, ``metrics.jsonl``, checkpoints, ``curves.png``) and
``{log_dir}/{run}.log`` (everything printed on the console, without progress bars).
"""
import contextlib
import json
import os
import re
import shutil
import sys

import torch
from filelock import FileLock, Timeout

from retinanet.models.checkpoint import atomic_torch_save
from retinanet.util.io import (TEMPORARY_NAME, atomic_link, WriteError, os_error_reason, probe_folder, read_utf8, write_json,
                               write_text)


# The files of a run folder, by name; RunDir writes them and the tables and report read them.
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
REPORT_FILE = "report.html"


def next_run_name(output_path, log_dir, depth, epochs, prefix="", create=False):
    """``{prefix}train_depth{D}_epochs{E}_no{N}`` with N one more than any run folder or log.

    ``create``: also create the run folder, exclusively: when another process took the name
    between the listing and ``os.mkdir``, the next number is tried (raises OSError when
    ``output_path`` cannot be written)."""
    prefix = f"{prefix}train_depth{depth}_epochs{epochs}_no"
    pattern = re.compile(re.escape(prefix) + r"(\d+)(\.log)?$")
    taken = [0]
    for folder in (output_path, log_dir):
        if os.path.isdir(folder):
            taken += [int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m]
    number = max(taken) + 1
    if create:
        os.makedirs(output_path, exist_ok=True)
        while True:
            try:
                os.mkdir(os.path.join(output_path, f"{prefix}{number}"))
                break
            except FileExistsError:
                number += 1
    return f"{prefix}{number}"


def tensor_bytes(obj):
    """Bytes of the tensors in a (nested) checkpoint dict: about the size of its file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(value) for value in obj)
    return 0


class RunLog:
    """print-like callable that writes to the console and appends to a log file.

    A line the file cannot take (a full disk) raises WriteError naming the log, once; the lines
    after it, those that say what was saved, still reach the console."""

    def __init__(self, path):
        self.path = path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", buffering=1)
        except OSError as error:
            raise WriteError.from_os_error(path, error) from None

    def __call__(self, *parts, file=None):
        text = " ".join(str(part) for part in parts)
        print(text, file=file or sys.stdout, flush=True)
        if self._file is None:
            return
        try:
            self._file.write(text + "\n")
        except OSError as error:
            broken, self._file = self._file, None
            with contextlib.suppress(OSError):  # its buffered line cannot be written either
                broken.close()
            raise WriteError.from_os_error(self.path, error) from None

    def close(self):
        if self._file is not None:
            self._file.close()


def append_metrics(path, record):
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    except OSError as error:
        raise WriteError.from_os_error(path, error) from None


def read_metrics(path):
    """All records of a metrics.jsonl file, in order; a torn last line (crash mid-write) is ignored."""
    records = []
    lines = read_utf8(path).splitlines()
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


def _lock_file(path):
    """(a held ``filelock.FileLock`` on ``path``, None), the pid written into the file, or (None, the
    holder's pid as written, or '') when a live process holds it. The lock is the system's (flock
    on Linux and macOS, LockFileEx on Windows), so the system drops it when its process dies and
    the lock of a crashed or killed run never blocks the next one."""
    while True:
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return None, _lock_owner(path)
        if _locks_the_file_at(lock, path):  # else its holder removed it as it released it: lock the new one
            break
        lock.release()
    try:
        with open(path, "w", encoding="ascii") as stream:
            stream.write(f"{os.getpid()}\n")
    except OSError:  # Windows: a locked file is written through the lock's own descriptor only
        pass
    return lock, None


def _lock_owner(path):
    try:
        with open(path, encoding="ascii", errors="replace") as stream:
            return stream.read(32).strip()
    except OSError:  # Windows: the holder's lock keeps others from reading
        return ""


def _locks_the_file_at(lock, path):
    """Whether the file ``lock`` holds is still the one at ``path`` (not removed and made anew)."""
    descriptor = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    try:
        return descriptor is None or os.fstat(descriptor).st_ino == os.stat(path).st_ino
    except OSError:
        return False


class RunDirError(RuntimeError):
    """A run folder cannot be used: it holds another run, another live run uses it, or it cannot be written."""


class CheckpointWriteError(RunDirError):
    """A checkpoint could not be written (a full disk, most often); the message says where and how much."""


# What torch.save raises when the underlying write fails (a full disk, a file-size limit).
_TORCH_WRITE_FAILURES = ("inline_container", "file write failed", "unexpected pos")


class RunDir:
    """One training run's files: ``{output_path}/{name}/`` and ``{log_dir}/{name}.log``.

    The folder holds ``config.json`` (every flag and a few facts), ``metrics.jsonl`` (one record
    per finished epoch), ``curves.png``, ``summary.json`` (once finished) and the checkpoints.
    """

    def __init__(self, output_path, log_dir, name):
        self.name = name
        self.path = os.path.join(output_path, name)
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.config_path = self.file(CONFIG_FILE)
        self.metrics_path = self.file(METRICS_FILE)
        self.summary_path = self.file(SUMMARY_FILE)
        self.curves_path = self.file(CURVES_FILE)
        self.stale_temporaries = []  # [(name, bytes)] that claim() removed

    def file(self, name):
        return os.path.join(self.path, name)

    def holds_a_run(self):
        """True when the folder has a finished epoch or any checkpoint, which a new run must not touch."""
        return os.path.exists(self.metrics_path) or bool(self.checkpoints())

    def checkpoints(self):
        """Names of the checkpoint files in the folder, the one to resume from first."""
        if not os.path.isdir(self.path):
            return []
        names = sorted(name for name in os.listdir(self.path) if name.endswith(".pt"))
        preferred = [name for name in ("checkpoint_interrupted.pt", "checkpoint_last.pt") if name in names]
        return preferred + [name for name in names if name not in preferred]

    def check_writable(self):
        """Create the folder and write a probe file, so an unwritable place fails now, not after an epoch.
        Raises OSError."""
        probe_folder(self.path)

    def claim(self, resuming=False, resumed_run=None):
        """Take the folder for this process: refuse one that holds another run (a new run, or a
        resumed run ``resumed_run`` continued under another name) or that another live run has
        locked, and check that it is writable. Raises RunDirError with the message to show.

        The lock is the system's file lock on ``.lock`` (``filelock``), held until ``release``: the
        system drops it when the process dies, so the lock of a crashed or killed run never blocks
        the next one."""
        self._refuse_another_run(resuming, resumed_run)
        try:
            os.makedirs(self.path, exist_ok=True)
            self._lock()
        except OSError as error:
            raise RunDirError(f"cannot write the run folder {self.path} (--output_path): "
                              f"{os_error_reason(error.filename or self.file('.lock'), error)}") from None
        try:
            self._refuse_another_run(resuming, resumed_run)  # again, now that no other run can start here
            self.check_writable()
            self.stale_temporaries = self._remove_stale_temporaries()
        except OSError as error:
            self.release()
            raise RunDirError(f"cannot write the run folder {self.path} (--output_path): "
                              f"{os_error_reason(error.filename or self.file('.lock'), error)}") from None
        except RunDirError:
            self.release()
            raise
        log_folder = os.path.dirname(os.path.abspath(self.log_path))
        try:
            probe_folder(log_folder)
            self._lock_log()
        except (OSError, RunDirError) as error:
            self.release()
            if not os.listdir(self.path):  # the folder this claim made, still empty: no trace of the run
                os.rmdir(self.path)
            if isinstance(error, RunDirError):
                raise
            raise RunDirError(f"cannot write the log folder {log_folder} (--log_dir): "
                              f"{os_error_reason(error.filename or self.log_path, error)}") from None

    def _remove_stale_temporaries(self):
        """Remove the atomic writer's temporary files (``.{name}.{8 hex}.tmp``) that a killed save left
        here: with the folder locked, no other process is writing them. Returns [(name, bytes)]."""
        removed = []
        for name in sorted(os.listdir(self.path)):
            if TEMPORARY_NAME.fullmatch(name):
                path = self.file(name)
                removed.append((name, os.path.getsize(path)))
                os.remove(path)
        return removed

    def _refuse_another_run(self, resuming, resumed_run):
        if not self.holds_a_run() or (resuming and resumed_run in (None, self.name)):
            return
        checkpoints = self.checkpoints()
        how = (f"continue it with --resume {self.file(checkpoints[0])}" if checkpoints
               else "remove the folder if it is no longer needed")
        if resuming:
            raise RunDirError(f"{self.path} already holds another run ({self.name}), and continuing {resumed_run} "
                              f"there would overwrite its files; pick a --run_name that is not taken")
        raise RunDirError(f"{self.path} already holds a run; pick another --run_name, or {how}")

    def _lock(self):
        """Lock ``.lock`` without waiting; RunDirError naming the folder when another live run holds it."""
        lock, owner = _lock_file(self.file(".lock"))
        if lock is None:
            raise RunDirError(f"{self.path} is in use by another run that is still going"
                              f"{f' (pid {owner})' if owner else ''}; wait for it to end or pick another --run_name")
        self._folder_lock = lock

    def _lock_log(self):
        """Lock the log too (``.{run}.log.lock`` beside it): two runs of one --run_name under different
        --output_path would otherwise write into the same log/<run>.log."""
        lock, owner = _lock_file(self._log_lock_path())
        if lock is None:
            raise RunDirError(f"{self.log_path} is being written by another run of the name {self.name} that is "
                              f"still going{f' (pid {owner})' if owner else ''}, under another --output_path; wait "
                              "for it to end, or pick another --run_name or --log_dir")
        self._log_lock = lock

    def _log_lock_path(self):
        return os.path.join(os.path.dirname(os.path.abspath(self.log_path)), f".{self.name}.log.lock")

    def release(self):
        """Give the folder and the log up (the end of the run); harmless when they were never claimed.
        The lock files are removed before they are unlocked (where the system allows it; Windows
        removes them on release): loader workers forked during the run may keep the descriptors
        open a while, and the next run then locks a new file."""
        for attribute, path in (("_log_lock", self._log_lock_path()), ("_folder_lock", self.file(".lock"))):
            lock = getattr(self, attribute, None)
            setattr(self, attribute, None)
            if lock is None:
                continue
            try:
                os.remove(path)
            except OSError:  # gone already, or Windows, which removes it as the lock is released
                pass
            lock.release(force=True)

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
        from retinanet.runs.trackers import STEPS_FILE, read_steps
        plot_run_curves(self.read_metrics(), self.curves_path, title=self.name, steps=read_steps(self.file(STEPS_FILE)))

    def save_checkpoint(self, state, name):
        """Write a checkpoint atomically into the run folder; returns its path.

        A failed write (a full disk) leaves the previous file intact and raises
        CheckpointWriteError saying where, how much the checkpoint needs and what is left."""
        path = self.file(name)
        try:
            atomic_torch_save(state, path)
        except OSError as error:
            reason = getattr(error, "reason", None) or error.strerror or str(error)
            raise CheckpointWriteError(self._write_failure(path, state, reason)) from None
        except RuntimeError as error:
            if not any(marker in str(error) for marker in _TORCH_WRITE_FAILURES):
                raise
            raise CheckpointWriteError(self._write_failure(path, state, "the write failed")) from None
        return path

    def save_same_as(self, state, name, source):
        """Save ``state`` as ``name`` when the folder's checkpoint ``source`` already holds exactly it:
        a hard link to ``source``, stored once, or where the file system has no hard links a copy
        written anew. Returns the path."""
        try:
            atomic_link(self.file(source), self.file(name))
        except OSError:
            return self.save_checkpoint(state, name)
        return self.file(name)

    def _write_failure(self, path, state, reason):
        try:
            free = f", {shutil.disk_usage(self.path).free / 1e6:.0f} MB free"
        except OSError:
            free = ""
        previous = [name for name in self.checkpoints() if name in ("checkpoint_last.pt", "checkpoint_interrupted.pt")]
        advice = (f"; the previous {previous[0]} is intact: free some space, then continue with "
                  f"--resume {self.file(previous[0])}" if previous
                  else "; no checkpoint of this run was saved before: free some space and start it again")
        return (f"could not save {path}: the disk is full or the write failed ({reason}) in {self.path}; the "
                f"checkpoint needs about {tensor_bytes(state) / 1e6:.0f} MB{free}{advice}")

    def remove(self, name):
        if os.path.exists(self.file(name)):
            os.remove(self.file(name))
