"""The command line's value types and train.py's parser, generated from ``retinanet.config``.

Each configuration field names the kind of value it takes; ``KINDS`` turns that into the argparse
type (with its range) and, for the anchor options, the action. ``add_options`` adds fields to a
parser or group with their defaults, help texts and choices as declared, so a flag is declared
once, in ``config.py``.
"""
import argparse
import os

from retinanet.cli.anchor_flags import ANCHOR_ACTIONS, anchor_number, iou_threshold, on_off
from retinanet.config import SECTIONS, default_of, options as config_options, section_of


def positive_int(text):
    value = _parse(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run_name(text):
    """An argparse type for --run_name: one folder name, so that the run stays inside --output_path."""
    if text in ("", ".", "..") or "/" in text or os.sep in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder name; a run name has no '/' and is not "
                                         "'.' or '..'")
    return text


def non_negative_int(text):
    value = _parse(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


# Each loader worker is a process holding PyTorch and the dataset: about 0.5 GB seen here.
WORKER_MEMORY_BYTES = 512 * 2**20
WORKERS_PER_CORE = 4


def worker_limit():
    """(most loader workers, why): WORKERS_PER_CORE per core this process may use, and no more than
    the available memory holds at WORKER_MEMORY_BYTES each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit, why = WORKERS_PER_CORE * cores, f"{cores} cores"
    available = _available_memory()
    if available is not None:
        by_memory = max(1, available // WORKER_MEMORY_BYTES)
        why += f" and {available / 2**30:.1f} GB of available memory (about 0.5 GB a worker)"
        limit = min(limit, by_memory)
    return limit, why


def _available_memory():
    """MemAvailable from /proc/meminfo in bytes, or None where there is none (macOS, Windows)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def worker_count(text):
    """--workers: 0 (load in the main process) up to ``worker_limit()``."""
    value = non_negative_int(text)
    limit, why = worker_limit()
    if value > limit:
        raise argparse.ArgumentTypeError(f"{value} worker processes is more than this machine can run: at most {limit} "
                                         f"({WORKERS_PER_CORE} per core with {why})")
    return value


def int_in_range(low, high, why=""):
    """An argparse type accepting integers from ``low`` to ``high``; ``why`` explains the bounds."""
    def parse(text):
        value = _parse(int, text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}{why}, got {text}")
        return value
    return parse


def positive_float(text):
    value = _parse(float, text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def non_negative_float(text):
    value = _parse(float, text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def probability(text):
    value = _parse(float, text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def unit_interval(text):
    value = _parse(float, text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _parse(kind, text):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def side_length(maximum):
    """An argparse type for an image side in pixels, from 1 to ``maximum``."""
    return int_in_range(1, maximum, " (pixels; larger images would need gigabytes of memory)")


def _kind(kind):
    """(argparse type, action class or None) of a configuration field's ``kind``."""
    if kind is None:
        return None, None
    if isinstance(kind, tuple):
        name, *bounds = kind
        return (side_length(*bounds) if name == "side" else int_in_range(*bounds)), None
    if kind in ANCHOR_ACTIONS:
        return anchor_number, ANCHOR_ACTIONS[kind]
    return KINDS[kind], None


KINDS = {"int": lambda text: _parse(int, text), "positive_int": positive_int, "non_negative_int": non_negative_int,
         "positive_float": positive_float, "non_negative_float": non_negative_float, "probability": probability,
         "unit_interval": unit_interval, "worker_count": worker_count, "run_name": run_name, "on_off": on_off,
         "iou": iou_threshold}


def add_option(group, field):
    """Add the configuration ``field`` (a dataclasses.Field of ``retinanet.config``) to ``group``."""
    meta = field.metadata
    default = default_of(field)
    names = [f"--{field.name}", *meta["aliases"]]
    if meta["switch"]:
        return group.add_argument(*names, dest=field.name, action="store_true", help=meta["help"])
    value_type, action = _kind(meta["kind"])
    keywords = {key: meta[key] for key in ("choices", "nargs", "const", "metavar") if meta[key] is not None}
    if action is not None:
        keywords["action"] = action
    return group.add_argument(*names, dest=field.name, type=value_type, default=default, help=meta["help"],
                              **keywords)


def add_options(parser, names=None):
    """Add the configuration's options (all, or those in ``names``) to ``parser``, one argument group
    per --help section, in ``config.SECTIONS`` order; returns {section: group}."""
    wanted = [(field, group) for field, group in config_options() if names is None or field.name in names]
    groups = {}
    for section in SECTIONS:
        fields = [field for field, group in wanted if section_of(field, group) == section]
        if not fields:
            continue
        groups[section] = parser.add_argument_group(section)
        for field in fields:
            add_option(groups[section], field)
    return groups
