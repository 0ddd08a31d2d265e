"""Tables of training runs, read from their run folders: one row per run, one row per configuration.

A run folder ``{output_path}/{run}/`` holds ``config.json`` (the run's flags plus a few extras),
``metrics.jsonl`` (one record per finished epoch, see ``runs/run_dir.py``) and, once the
run has finished, ``summary.json``. A folder without ``summary.json`` is still running or crashed.

Per-run rows give the best epoch's COCO numbers (best by AP, over the epochs that were
evaluated), the last epoch's loss and the wall time. Where the folder holds ``report.html``
(``reporting.page``), the run's name in the Markdown table links to it. ``aggregate`` groups runs that differ only
in their seed and reports the mean and sample standard deviation of AP, AP50, AP75 and the
final loss.
"""
import csv
import json
import math
import os
import statistics
import sys
from fnmatch import fnmatchcase

from retinanet.evaluation.coco_eval import COCO_STAT_NAMES
from retinanet.runs.run_dir import CONFIG_FILE, METRICS_FILE, REPORT_FILE, SUMMARY_FILE, read_metrics
from retinanet.util.io import atomic_write, read_json_object

FINISHED = "finished"
UNFINISHED = "running or crashed"
COCO_COLUMNS = COCO_STAT_NAMES[:6]  # the six AP numbers: AP, AP50, AP75, APs, APm, APl
# (header, row key) of the per-run table.
COLUMNS = (
    ("run", "run"), ("depth", "depth"), ("optimizer", "optimizer"), ("lr", "lr"), ("batch", "batch"),
    ("drop_last", "drop_last"), ("prior", "prior"), ("alpha", "alpha"), ("gamma", "gamma"), ("seed", "seed"),
    ("epochs", "epochs"), ("final loss", "final_loss"),
) + tuple((name, name) for name in COCO_COLUMNS) + (("best epoch", "best_epoch"), ("wall time", "wall_seconds"))
# Row key -> config.json key, for the table's configuration columns.
CONFIG_COLUMNS = {
    "depth": "depth", "optimizer": "optimizer", "lr": "learning_rate", "batch": "batch_size",
    "drop_last": "drop_last", "prior": "prior", "alpha": "alpha", "gamma": "gamma", "seed": "seed",
    "epochs_planned": "epochs",
}
GROUP_COLUMNS = ("depth", "optimizer", "lr", "batch", "drop_last", "prior", "alpha", "gamma", "epochs_planned")
# config.json keys that name, place or run a training without changing what it learns, or record
# what happened (the precision check's timings differ from run to run of one configuration).
NOT_CONFIGURATION_KEYS = frozenset({
    "run_name", "seed", "output_path", "log_dir", "resume", "device", "device_used", "workers",
    "eval_batch_size", "evaluator", "print_every", "save_every", "skip_dataset_check", "max_skipped_images",
    "config", "print_config", "allow_changed_data", "precision", "precision_check", "precision_fallback",
    "train_data_changes",
})
CSV_KEYS = ("run", "status", "depth", "optimizer", "lr", "batch", "drop_last", "prior", "alpha", "gamma", "seed",
            "epochs_done", "epochs_planned", "final_loss") + COCO_COLUMNS + ("best_epoch", "wall_seconds", "path")
AGGREGATED = (("AP", "AP"), ("AP50", "AP50"), ("AP75", "AP75"), ("final loss", "final_loss"))
HEADERS = {"epochs_planned": "epochs"}
LEFT_ALIGNED = frozenset({"run", "optimizer", "seeds"})
DESCENDING = frozenset(COCO_COLUMNS)


# ----- finding and reading run folders ---------------------------------------------------
def is_run_dir(path):
    """A run folder holds both config.json and metrics.jsonl."""
    return all(os.path.isfile(os.path.join(path, name)) for name in (CONFIG_FILE, METRICS_FILE))


def find_runs(paths, note=None):
    """Run folders named by ``paths``, in the given order, each once.

    A path may be a run folder, a folder of run folders (``output/``), a folder of console logs
    (``log/``: ``log/{run}.log`` stands for the sibling ``output/{run}``) or one ``.log`` file.
    A log without its run folder is skipped with a call to ``note(text)`` (default: print to stderr).
    """
    note = note or _note_to_stderr
    found, seen = [], set()
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file or folder")
        if os.path.isfile(path):
            if not path.endswith(".log"):
                raise ValueError(f"{path}: not a run folder, a folder of runs or logs, or a .log file")
            candidates = [_run_dir_for_log(path, note)]
        elif is_run_dir(path):
            candidates = [path]
        else:
            entries = [os.path.join(path, entry) for entry in sorted(os.listdir(path))]
            candidates = [entry for entry in entries if is_run_dir(entry)]
            for entry in entries:  # a run that failed before its first epoch: say so, do not drop it silently
                if os.path.isfile(os.path.join(entry, CONFIG_FILE)) and not is_run_dir(entry):
                    note(f"{entry}: a run that finished no epoch (config.json without {METRICS_FILE}); left out")
            candidates += [_run_dir_for_log(entry, note) for entry in entries
                           if entry.endswith(".log") and os.path.isfile(entry)]
            if not candidates:
                note(f"{path}: no run folders (config.json + metrics.jsonl) and no .log files")
        for run_dir in candidates:
            if run_dir is not None and os.path.realpath(run_dir) not in seen:
                seen.add(os.path.realpath(run_dir))
                found.append(run_dir)
    return found


def select_runs(run_dirs, patterns):
    """The run folders whose name matches one of the shell-style ``patterns`` (all when None)."""
    if not patterns:
        return list(run_dirs)
    unmatched = [pattern for pattern in patterns
                 if not any(fnmatchcase(run_name(run_dir), pattern) for run_dir in run_dirs)]
    if unmatched:
        raise ValueError(f"no run named {', '.join(unmatched)} among the {len(run_dirs)} runs found")
    return [run_dir for run_dir in run_dirs if any(fnmatchcase(run_name(run_dir), pattern) for pattern in patterns)]


def run_name(run_dir):
    return os.path.basename(os.path.normpath(run_dir))


def load_run(run_dir):
    """Everything a run folder says: ``{"name", "path", "config", "records", "summary", "status"}``.

    ``summary`` is None and ``status`` is ``"running or crashed"`` while summary.json is absent.
    """
    config_path = os.path.join(run_dir, CONFIG_FILE)
    config = read_json_object(config_path)
    metrics_path = os.path.join(run_dir, METRICS_FILE)
    records = read_metrics(metrics_path)
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise ValueError(f"{metrics_path}: record {index} is not an object with an integer 'epoch'")
    summary_path = os.path.join(run_dir, SUMMARY_FILE)
    summary = read_json_object(summary_path) if os.path.exists(summary_path) else None
    return {"name": run_name(run_dir), "path": run_dir, "config": config, "records": records,
            "summary": summary, "status": FINISHED if summary is not None else UNFINISHED}


def _run_dir_for_log(log_path, note):
    name = os.path.basename(log_path)[: -len(".log")]
    run_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(log_path))), "output", name)
    if is_run_dir(run_dir):
        return run_dir
    note(f"{log_path}: no run folder {run_dir} with config.json and metrics.jsonl; skipped")
    return None


def _note_to_stderr(text):
    print(f"note: {text}", file=sys.stderr)


# ----- one row per run ---------------------------------------------------------------------
def summary_rows(runs):
    """One row (dict keyed like ``COLUMNS`` plus ``epochs_done``, ``epochs_planned``, ``status``,
    ``path``, ``config`` and ``report``, the path of its report.html or None) per run; ``runs`` are
    ``load_run`` results or run folders.

    Unknown values are None: no evaluated epoch, a COCO number of -1 (no ground truth in that
    size range), a setting missing from config.json.
    """
    return [_summary_row(run if isinstance(run, dict) else load_run(run)) for run in runs]


def _summary_row(run):
    config, records, summary = run["config"], run["records"], run["summary"]
    row = {"run": run["name"], "path": run["path"], "status": run["status"], "config": config}
    report = os.path.join(run["path"], REPORT_FILE)
    row["report"] = report if os.path.isfile(report) else None
    for key, config_key in CONFIG_COLUMNS.items():
        row[key] = config.get(config_key)
    row["epochs_done"] = records[-1]["epoch"] if records else 0
    row["final_loss"] = records[-1].get("loss") if records else None
    best = best_record(records)
    for name in COCO_COLUMNS:
        row[name] = _coco_value(best["coco"].get(name)) if best else None
    row["best_epoch"] = best["epoch"] if best else None
    seconds = [record["seconds"] for record in records if record.get("seconds") is not None]
    if summary is not None and summary.get("wall_seconds") is not None:
        row["wall_seconds"] = summary["wall_seconds"]
    else:
        row["wall_seconds"] = sum(seconds) if seconds else None
    return row


def best_record(records):
    """The evaluated record with the highest AP (the earliest on ties), or None."""
    evaluated = [record for record in records
                 if isinstance(record.get("coco"), dict) and _coco_value(record["coco"].get("AP")) is not None]
    if not evaluated:
        return None
    return max(evaluated, key=lambda record: (record["coco"]["AP"], -record["epoch"]))


def _coco_value(value):
    if value is None or math.isnan(value) or value < 0:
        return None
    return value


def sort_rows(rows, column):
    """Rows sorted by one column (header or row key); COCO metrics best first, others ascending,
    unknown values last."""
    key = resolve_column(column)
    if key == "epochs":
        key = "epochs_done"
    known = [row for row in rows if row.get(key) is not None]
    unknown = [row for row in rows if row.get(key) is None]
    return sorted(known, key=lambda row: row[key], reverse=key in DESCENDING) + unknown


def resolve_column(name):
    """The row key of a column given by header or key, case and ``_``/space insensitive."""
    wanted = _normalise(name)
    for header, key in COLUMNS:
        if wanted in (_normalise(header), _normalise(key)):
            return key
    raise ValueError(f"unknown column {name!r}: choose one of {', '.join(header for header, _ in COLUMNS)}")


def _normalise(name):
    return name.lower().replace(" ", "_").replace("-", "_")


def format_duration(seconds):
    """12m34s, or 1h02m03s from an hour on; '-' when unknown."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_markdown_table(rows):
    """The per-run Markdown table (columns of ``COLUMNS``), '-' for unknown values."""
    return _markdown([header for header, _ in COLUMNS], [key for _, key in COLUMNS],
                     [[_format_cell(key, row) for _, key in COLUMNS] for row in rows])


def _format_cell(key, row):
    if key == "run" and row.get("report"):
        return f"[{row['run']}]({row['report']})"
    if key == "epochs":
        return f"{row['epochs_done']}/{_format_value('epochs', row.get('epochs_planned'))}"
    return _format_value(key, row.get(key))


def _format_value(key, value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "wall_seconds":
        return format_duration(value)
    if key == "final_loss":
        return f"{value:.4f}"
    if key in COCO_COLUMNS:
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _markdown(headers, keys, cells):
    def line(values):
        return "| " + " | ".join(str(value).replace("|", "\\|") for value in values) + " |"
    rule = ["---" if key in LEFT_ALIGNED else "---:" for key in keys]
    return "\n".join([line(headers), "|" + "|".join(rule) + "|"] + [line(row) for row in cells])


def write_csv(rows, path):
    """The per-run rows as CSV with raw numbers (empty where unknown), written atomically."""
    keys = list(CSV_KEYS)
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row[key] for key in keys})


# ----- one row per configuration -----------------------------------------------------------
def aggregate(rows, group_by=None):
    """Group runs that share a configuration and average them; groups in order of first appearance.

    group_by: row keys or config.json keys that define a configuration. The default is every
        configuration column of the table except the seed, plus every other config.json setting
        (all but ``NOT_CONFIGURATION_KEYS``); the settings that differ between runs are listed in
        each group's ``settings``.
    Returns a list of dicts: ``settings`` ({name: value}), ``runs`` (names), ``seeds``,
    ``unfinished`` (how many runs have no summary.json), and ``{AP,AP50,AP75,final_loss}_{mean,std}``
    (std is the sample standard deviation, n-1; None with fewer than two known values).
    """
    names = list(group_by) if group_by else list(GROUP_COLUMNS) + _varying_settings(rows)
    groups = {}
    for row in rows:
        settings = {name: _setting(row, name) for name in names}
        key = json.dumps(list(settings.values()), sort_keys=True, default=str)
        groups.setdefault(key, {"settings": settings, "rows": []})["rows"].append(row)
    return [_group_statistics(group["settings"], group["rows"]) for group in groups.values()]


def has_repeated_configurations(groups):
    return any(len(group["runs"]) > 1 for group in groups)


def format_aggregate_table(groups):
    """Markdown table: a configuration's settings, its number of runs, seeds, then mean and std."""
    if not groups:
        return _markdown(["runs"], ["runs"], [])
    names = list(groups[0]["settings"])
    headers = [HEADERS.get(name, name) for name in names] + ["runs", "seeds"]
    keys = names + ["runs", "seeds"]
    for header, key in AGGREGATED:
        headers += [f"{header} mean", f"{header} std"]
        keys += [key, key]
    cells = []
    for group in groups:
        count = f"{len(group['runs'])}" + (f" ({group['unfinished']} unfinished)" if group["unfinished"] else "")
        line = [_format_value(name, value) for name, value in group["settings"].items()]
        line += [count, ", ".join("-" if seed is None else str(seed) for seed in group["seeds"])]
        for _, key in AGGREGATED:
            line += [_format_value(key, group[f"{key}_mean"]), _format_value(key, group[f"{key}_std"])]
        cells.append(line)
    return _markdown(headers, keys, cells)


def format_report(rows, group_by=None, always_aggregate=False):
    """The per-run table, then the per-configuration table (see ``aggregate``) when a configuration
    has 2+ runs, or always with ``always_aggregate``."""
    text = format_markdown_table(rows)
    groups = aggregate(rows, group_by)
    if always_aggregate or has_repeated_configurations(groups):
        shared = ", ".join(group_by) if group_by else "every setting but the seed"
        text += f"\n\nMean and sample standard deviation (n-1) over runs sharing {shared}:\n\n"
        text += format_aggregate_table(groups)
        same = [group for group in groups if group["one_seed"]]
        if same:
            text += (f"\n\nNote: {len(same)} of these configurations ran {', '.join(str(len(g['runs'])) for g in same)} "
                     f"times with one seed ({', '.join(str(g['seeds'][0]) for g in same)}): their std measures "
                     "run-to-run nondeterminism only, not the spread over seeds (vary --seed, e.g. tools/sweep.py "
                     "--seeds 1 2 3)")
    return text


def _setting(row, name):
    if name in row:
        return row[name]
    return row.get("config", {}).get(name)


def _other_settings(row):
    in_table = set(CONFIG_COLUMNS.values())
    return {key: value for key, value in row.get("config", {}).items()
            if key not in NOT_CONFIGURATION_KEYS and key not in in_table}


def _varying_settings(rows):
    """config.json settings outside the table that do not have one value across all rows."""
    others = [_other_settings(row) for row in rows]
    keys = sorted(set().union(*others)) if others else []
    return [key for key in keys
            if len({json.dumps(other.get(key), sort_keys=True, default=str) for other in others}) > 1]


def _group_statistics(settings, rows):
    group = {"settings": settings, "runs": [row["run"] for row in rows], "seeds": [row.get("seed") for row in rows],
             "unfinished": sum(row.get("status") != FINISHED for row in rows)}
    group["one_seed"] = len(rows) > 1 and len({json.dumps(seed) for seed in group["seeds"]}) == 1
    for _, key in AGGREGATED:
        values = [row[key] for row in rows if row.get(key) is not None]
        group[f"{key}_mean"] = statistics.fmean(values) if values else None
        group[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
    return group
