"""Write (or rewrite) a run's report page, output/<run>/report.html, from its folder's files.

    python tools/report.py output/<run>
    python tools/report.py output/<run> --redraw --coco_path ./data --device cpu

The page is self-contained (see retinanet/runs/report.py); open it in any browser. When the
folder has no picture of validation predictions yet (or with --redraw), one is drawn by running
the run's model_final.pt (else checkpoint_best.pt, else checkpoint_last.pt) on a few images of
its validation set. Training writes the page after every evaluation; test.py --output_dir
output/<run> adds the analysis of a checkpoint, which this picks up.
"""
import argparse
import os
import sys

from retinanet.data.coco import DatasetLoadError
from retinanet.data.image_io import ImageReadError
from retinanet.evaluation.analysis import DEFAULT_SCORE_THRESHOLD
from retinanet.evaluation.analysis_plots import find_best_threshold
from retinanet.runs import tables
from retinanet.runs.checkpoint import CheckpointError
from retinanet.runs.report import write_report
from retinanet.runs.report_grid import (NUM_IMAGES, draw_predictions_grid, find_checkpoint, grid_path,
                                        predictions_from_checkpoint)
from retinanet.runs.options import positive_int
from retinanet.util.device import DEVICE_CHOICES


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder (config.json and metrics.jsonl)")
    pictures = parser.add_argument_group("validation pictures")
    pictures.add_argument("--redraw", action="store_true", help="draw the predictions picture again")
    pictures.add_argument("--coco_path", default=None,
                          help="dataset root holding the validation set (default: the run's --coco_path)")
    pictures.add_argument("--num_images", type=positive_int, default=NUM_IMAGES,
                          help=f"validation images in the picture (default: {NUM_IMAGES})")
    pictures.add_argument("--device", default="cpu", choices=DEVICE_CHOICES,
                          help="where the checkpoint runs (default: cpu, a few images take seconds)")
    args = parser.parse_args(argv)
    if not tables.is_run_dir(args.run_dir):
        parser.error(f"{args.run_dir}: not a run folder (no config.json and metrics.jsonl)")
    return args


def draw_pictures(args, config):
    """Draw {set}_predictions.png with the run's checkpoint; returns a line saying what happened."""
    set_name = config.get("val_set") or "val"
    coco_path = args.coco_path or config.get("coco_path") or "./data"
    checkpoint = find_checkpoint(args.run_dir)
    if checkpoint is None:
        return f"no predictions picture: {args.run_dir} has no checkpoint"
    if not os.path.isfile(os.path.join(coco_path, f"{set_name}.json")):
        return f"no predictions picture: {os.path.join(coco_path, f'{set_name}.json')} not found (give --coco_path)"
    try:
        dataset, results = predictions_from_checkpoint(checkpoint, coco_path, set_name, args.device, args.num_images)
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
    main()
