"""Write (or rewrite) a run's report page, output/<run>/report.html, from its folder's files.

    python tools/report.py output/<run>
    python tools/report.py output/<run> --redraw --coco_path ./data --device cpu

The page is self-contained (see retinanet/reporting/page.py); open it in any browser. When the
folder has no picture of validation predictions yet (or with --redraw), one is drawn by running
the run's model_final.pt (else checkpoint_best.pt, else checkpoint_last.pt) on a few images of
its validation set. Training writes the page after every evaluation; test.py --output_dir
output/<run> adds the analysis of a checkpoint, which this picks up.
"""
import argparse
import os
import sys

from retinanet.cli.flags import positive_int
from retinanet.data.coco import DatasetLoadError
from retinanet.data.image_io import ImageReadError
from retinanet.data.layout import SetNotFoundError, resolve_set
from retinanet.evaluation.analysis import DEFAULT_SCORE_THRESHOLD
from retinanet.evaluation.analysis import find_best_threshold
from retinanet.runs import tables
from retinanet.models.checkpoint import CheckpointError
from retinanet.reporting.page import write_report
from retinanet.reporting.prediction_grid import (NUM_IMAGES, draw_predictions_grid, find_checkpoint, grid_path,
                                        predictions_from_checkpoint)
from retinanet.util.device import DEVICE_CHOICES
from retinanet.util.script import run_script


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder (config.json and metrics.jsonl)")
    pictures = parser.add_argument_group("validation pictures")
    pictures.add_argument("--redraw", action="store_true", help="draw the predictions picture again")
    pictures.add_argument("--coco_path", default=None,
                          help="dataset root holding the validation set, in any layout train.py reads "
                               "(default: the run's --coco_path, or its --val_json / --val_images)")
    pictures.add_argument("--num_images", type=positive_int, default=NUM_IMAGES,
                          help=f"validation images in the picture (default: {NUM_IMAGES})")
    pictures.add_argument("--device", default="cpu", choices=DEVICE_CHOICES,
                          help="where the checkpoint runs (default: cpu, a few images take seconds)")
    args = parser.parse_args(argv)
    if not tables.is_run_dir(args.run_dir):
        parser.error(f"{args.run_dir}: not a run folder (no config.json and metrics.jsonl)")
    return args


def validation_files(args, config):
    """SetFiles of the run's validation set as training found it: --coco_path given here searches that
    root in every layout; otherwise the run's own --val_json / --val_images, else its --coco_path.
    Returns a line saying why when the set is not there."""
    set_name = config.get("val_set") or "val"
    if args.coco_path is not None:
        json_path, image_dir = None, None
    else:
        json_path, image_dir = config.get("val_json"), config.get("val_images")
    root = args.coco_path or config.get("coco_path") or "./data"
    try:
        return resolve_set(root, set_name, json_path=json_path, image_dir=image_dir)
    except SetNotFoundError as error:
        return f"{error} (give --coco_path)"


def draw_pictures(args, config):
    """Draw {set}_predictions.png with the run's checkpoint; returns a line saying what happened."""
    set_name = config.get("val_set") or "val"
    checkpoint = find_checkpoint(args.run_dir)
    if checkpoint is None:
        return f"no predictions picture: {args.run_dir} has no checkpoint"
    files = validation_files(args, config)
    if isinstance(files, str):
        return f"no predictions picture: {files}"
    try:
        dataset, results = predictions_from_checkpoint(checkpoint, None, set_name, args.device, args.num_images,
                                                       json_path=files.json_path, image_dir=files.image_dir)
        found = find_best_threshold(set_name, [args.run_dir])
        threshold = found[0] if found else DEFAULT_SCORE_THRESHOLD
        path = draw_predictions_grid(dataset, results, grid_path(args.run_dir, set_name), threshold)
    except (CheckpointError, DatasetLoadError, ImageReadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if path is None:
        return f"no predictions picture: none of the {len(dataset)} sampled {set_name} images could be decoded"
    return (f"{path}: {len(dataset)} {set_name} images predicted with {checkpoint}, drawn from score "
            f"{threshold:.3f}{' (the best F1)' if found else ''}")


def main(argv=None):
    args = parse_args(argv)
    try:
        config = tables.load_run(args.run_dir)["config"]
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    set_name = config.get("val_set") or "val"
    if args.redraw or not os.path.isfile(grid_path(args.run_dir, set_name)):
        print(draw_pictures(args, config))
    try:
        path = write_report(args.run_dir)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(path)


if __name__ == "__main__":
    run_script(main)
