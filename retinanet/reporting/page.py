"""One HTML page per run, ``{run}/report.html``, built from the run folder's files.

The page is a single self-contained file (images embedded as ``data:`` URIs, inline CSS, no
script, nothing fetched from the network) that any browser opens from disk. It shows, from top to
bottom: the run's status and settings (``config.json``), the loss and AP curves (``curves.png``),
the latest evaluation's 12 COCO numbers (``metrics.jsonl``, else ``{set}_metrics.json``), the
per-class table and the analysis plots (``{set}_analysis.json`` and ``{set}_*.png``, see
``evaluation.analysis``), and validation pictures with ground truth and predictions
(``{set}_predictions.png``, ``reporting.prediction_grid``). ``{set}`` is the run's ``--val_set``. A part
whose file is missing says so in one grey line.

Every text that comes from a file (flags, paths, class names) goes through ``html.escape``.
The trainer calls ``update_after_evaluation`` after each evaluation; ``tools/report.py RUN_DIR``
rebuilds the page of any run folder.
"""
import base64
import html
import json
import os
import time

from retinanet.evaluation.analysis import DEFAULT_SCORE_THRESHOLD, analyze_detections
from retinanet.evaluation.analysis_plots import analysis_paths, write_analysis
from retinanet.evaluation.coco_eval import COCO_STAT_NAMES, STAT_LABELS
from retinanet.reporting.prediction_grid import draw_predictions_grid, grid_path
from retinanet.runs.run_dir import REPORT_FILE
from retinanet.runs.tables import best_record, format_duration, load_run
from retinanet.util.io import read_json_object, write_text


STYLE = """
body { font-family: sans-serif; font-size: 16px; margin: 1.5em auto; max-width: 1100px; padding: 0 1em; color: #222; }
.headline { font-size: 1.6em; margin: 0.3em 0; } summary { cursor: pointer; font-weight: bold; margin-top: 1.6em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.columns { display: flex; gap: 1em; align-items: flex-start; } .columns table { flex: 1; }
.settings td:last-child, .labels td:last-child { text-align: left; }
.settings td:last-child { font-family: monospace; word-break: break-all; }
.labels td:last-child { font-family: monospace; font-size: 0.95em; white-space: pre; color: #444; }
.halves { display: flex; gap: 1em; } .halves figure { flex: 1; }
.note { color: #888; } img { max-width: 100%; border: 1px solid #eee; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.85em; color: #555; }
"""


def report_path(run_path):
    return os.path.join(run_path, REPORT_FILE)


def update_after_evaluation(run_path, dataset, results, epoch):
    """After an evaluation in training: the analysis of ``results`` (a COCO results list) on
    ``dataset`` (the validation CocoDetection) with its plots, the predictions picture at the
    best-F1 threshold, then the page. Returns the page's path."""
    analysis = analyze_detections(dataset.json_path, results)
    write_analysis(analysis, run_path, dataset.set_name, source={"epoch": epoch, "ground_truth": dataset.json_path})
    best = analysis["f1"]["best"]
    draw_predictions_grid(dataset, results, grid_path(run_path, dataset.set_name),
                          best["threshold"] if best else DEFAULT_SCORE_THRESHOLD)
    return write_report(run_path)


def write_report(run_path):
    """Build ``{run_path}/report.html`` from the folder's files; returns its path.
    Raises ValueError naming a file that is not what it should be (see ``tables.load_run``)."""
    run = load_run(run_path)
    set_name = run["config"].get("val_set") or "val"
    # The results first (headline AP, curves, tables, analysis, pictures); the settings folded last.
    sections = [
        _header(run),
        _section("Training curves", _image(os.path.join(run_path, "curves.png"), "loss and learning rate by step, loss and validation AP per epoch")),
        _section("Latest evaluation and per-class AP", "<div class=\"columns\">"
                 f"<div>{_evaluation(run, set_name)}</div><div>{_per_class(run_path, set_name)}</div></div>"),
        _section("Analysis", _analysis(run_path, set_name)),
        _section("Validation predictions", _image(
            grid_path(run_path, set_name), f"{set_name} images: ground truth (green, left) and predictions "
            f"(red, right, at the best-F1 threshold of the analysis)")),
        f"<details id=\"settings\"><summary>Settings ({len(run['config'])} entries of config.json)</summary>\n"
        f"{_settings_table(run['config'])}</details>",
    ]
    title = html.escape(f"{run['name']}: run report")
    page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(sections) + "\n</body>\n</html>\n")
    path = report_path(run_path)
    write_text(path, page)
    return path


# ----- sections -------------------------------------------------------------------------------
def _section(title, body):
    return f"<h2>{html.escape(title)}</h2>\n{body}"


def _note(text):
    return f"<p class=\"note\">{html.escape(text)}</p>"


def _header(run):
    config, records, summary = run["config"], run["records"], run["summary"]
    done, planned = (records[-1]["epoch"] if records else 0), config.get("epochs", "?")
    if summary is not None:
        status = f"finished: {done} of {planned} epochs in {format_duration(summary.get('wall_seconds'))}"
    else:
        seconds = sum(record.get("seconds") or 0 for record in records)
        status = f"{done} of {planned} epochs done ({format_duration(seconds)} of training)"
        status += "" if done == planned else "; running, stopped or interrupted"
    best = best_record(records)
    headline = (f"best val AP <b>{best['coco']['AP']:.3f}</b> (AP50 {best['coco']['AP50']:.3f}) at epoch "
                f"{best['epoch']}" if best is not None else "no evaluation yet")
    return (f"<h1>{html.escape(run['name'])}</h1>\n<p class=\"headline\" id=\"headline\">{headline}</p>\n"
            f"<p>{html.escape(status)}</p>\n"
            f"<p class=\"note\">{html.escape(os.path.abspath(run['path']))}; page written "
            f"{html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>")


def _format_setting(value):
    return value if isinstance(value, str) else json.dumps(value)


def _settings_table(config, columns=3):
    """Every config.json entry, sorted by name, in ``columns`` tables side by side."""
    keys = sorted(config)
    per_column = -(-len(keys) // columns) or 1
    tables = []
    for start in range(0, len(keys), per_column):
        rows = "".join(f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(_format_setting(config[key]))}</td></tr>"
                       for key in keys[start:start + per_column])
        tables.append(f"<table class=\"settings\">{rows}</table>")
    return f"<div class=\"columns\">{''.join(tables)}</div>" if tables else _note("config.json is empty")


def _number(value, digits=3):
    if value is None or (isinstance(value, (int, float)) and value < 0):
        return "-"
    return f"{value:.{digits}f}"


def _evaluation(run, set_name):
    """The 12 numbers of the last evaluated epoch, else of test.py's {set}_metrics.json."""
    evaluated = [record for record in run["records"] if isinstance(record.get("coco"), dict)]
    if evaluated:
        stats, source = evaluated[-1]["coco"], f"epoch {evaluated[-1]['epoch']}, on {set_name} (metrics.jsonl)"
    else:
        metrics = _read_json(os.path.join(run["path"], f"{set_name}_metrics.json"))
        if metrics is None:
            return _note("no evaluation yet")
        stats, source = metrics["stats"], f"{set_name}_metrics.json ({metrics.get('checkpoint', 'test.py')})"
    rows = "".join(f"<tr><td>{name}</td><td>{_number(stats.get(name))}</td><td>{html.escape(label.strip())}</td></tr>"
                   for name, label in zip(COCO_STAT_NAMES, STAT_LABELS))
    return (f"<p>{html.escape(source)}; '-' where no ground truth falls in the range</p>\n"
            f"<table class=\"labels\"><tr><th>metric</th><th>value</th><th>COCOeval</th></tr>{rows}</table>")


def _per_class(run_path, set_name):
    """From the analysis (AP, AP50, AP75), else from test.py's metrics file (AP, AP50)."""
    for name, columns in ((f"{set_name}_analysis.json", ("AP", "AP50", "AP75")),
                          (f"{set_name}_metrics.json", ("AP", "AP50"))):
        data = _read_json(os.path.join(run_path, name))
        if data is not None and data.get("per_class"):
            header = "".join(f"<th>{column}</th>" for column in ("class", "id") + columns + ("ground-truth boxes",))
            rows = "".join(
                f"<tr><td>{html.escape(str(row['name']))}</td><td>{html.escape(str(row['category_id']))}</td>"
                + "".join(f"<td>{_number(row.get(column))}</td>" for column in columns)
                + f"<td>{int(row.get('num_gt', 0))}</td></tr>" for row in data["per_class"])
            return f"<p>{html.escape(_source_text(name, data))}</p>\n<table><tr>{header}</tr>{rows}</table>"
    return _note(f"no {set_name}_analysis.json or {set_name}_metrics.json yet")


def _source_text(name, data):
    source = data.get("source") or {}
    if "epoch" in source:
        return f"{name}: the evaluation after epoch {source['epoch']}"
    described = source.get("checkpoint") or data.get("checkpoint") or source.get("results")
    return f"{name}: {described}" if described else name


def _analysis(run_path, set_name):
    paths = analysis_paths(run_path, set_name)
    analysis = _read_json(paths["json"])
    if analysis is None:
        return _note(f"no {set_name}_analysis.json yet: it is written after each evaluation, or by "
                     f"test.py --output_dir {run_path}")
    best, confusion = analysis["f1"]["best"], analysis["confusion"]
    text = (f"{_source_text(os.path.basename(paths['json']), analysis)}. "
            + (f"Best F1 {best['f1']:.3f} at score >= {best['threshold']:.3f} (IoU {analysis['f1']['iou']}; "
               f"precision {best['precision']:.3f}, recall {best['recall']:.3f}); vis.py draws from this "
               f"threshold by default. " if best else "No detections. ")
            + f"Confusion matrix at score >= {confusion['score_threshold']:.3f}, IoU {confusion['iou']}: rows are "
              f"ground truth, columns detections; the background column counts missed boxes, the background "
              f"row false detections.")
    pr_curves = _image(paths["pr_curves"], "precision-recall per class at IoU 0.5 and 0.75")
    halves = [_image(paths["f1_threshold"], "F1, precision and recall against the score threshold"),
              _image(paths["ap_by_size"], "AP by object size")]
    return (f"<p>{html.escape(text)}</p>\n{pr_curves}\n<div class=\"halves\">{''.join(halves)}</div>\n"
            + _image(paths["confusion_matrix"], "confusion matrix with background"))


def _image(path, caption):
    """A figure with the PNG at ``path`` embedded as a data URI, or a note when it is missing."""
    if not os.path.isfile(path):
        return _note(f"{os.path.basename(path)}: not written yet")
    with open(path, "rb") as handle:
        encoded = base64.b64encode(handle.read()).decode("ascii")
    return (f"<figure><img src=\"data:image/png;base64,{encoded}\" alt=\"{html.escape(caption)}\">"
            f"<figcaption>{html.escape(os.path.basename(path))}: {html.escape(caption)}</figcaption></figure>")


def _read_json(path):
    """The JSON object at ``path``, None when there is no such file; ValueError naming a bad one."""
    return read_json_object(path) if os.path.isfile(path) else None
