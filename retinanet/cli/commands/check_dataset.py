"""Check COCO-format dataset sets before training and print what is wrong with them.
Also installed as the ``retinanet-check`` command (``pip install .``); ``python tools/check_dataset.py`` runs the same code.

    python tools/check_dataset.py --coco_path ./data --set_name train val
    python tools/check_dataset.py --coco_path path/to/roboflow_export --set_name train valid

A set is found under --coco_path in any layout train.py reads (retinanet/data/layout.py): ours
({set}.json and images/{set}/), COCO's own (annotations/instances_{set}.json and {set}/) or
Roboflow's ({set}/_annotations.coco.json beside the images).

An image in two of the sets (one file listed by both, or a copy of it under another name) makes
the later set unusable: a model trained on one is then scored on what it saw. train.py checks
its training and validation sets the same way.

Exits with 0 when every set is usable (fixes the data loader applies are listed with their
counts) and with 2 when a set is unusable.

After the check, each usable set's boxes, resized as train.py resizes them (--min_side,
--max_side), are summarised per class (sizes, h/w, boxes per image) with the anchor coverage:
the share of boxes whose best anchor reaches --positive_iou with the anchors of the --anchor_*
flags. Under 95% the report says why boxes are missed and proposes anchor flags, with the
coverage each reaches. --output_dir also writes {set}_box_sizes.png, the box-size histogram per
class with the anchor sizes marked.
"""
import argparse
import os
import sys

from retinanet.cli.anchor_flags import add_anchor_arguments, add_assignment_arguments, add_low_quality_argument
from retinanet.data.check import check_dataset
from retinanet.data.leakage import check_shared_images
from retinanet.models.anchor_options import iou_threshold_problem
from retinanet.util.script import run_script

EXIT_UNUSABLE = 2


def positive_int(text):
    """argparse type; the same rule as ``retinanet.cli.flags.positive_int``, kept here so the
    checker starts without importing torch (which that module needs for the model options)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco_path", default="./data",
                        help="dataset root, in any layout train.py reads (default: ./data)")
    parser.add_argument("--set_name", nargs="+", default=["train", "val"],
                        help="one or more sets to check (default: train val)")
    parser.add_argument("--no_images", action="store_true",
                        help="check the JSON only, not the image files")
    parser.add_argument("--num_threads", type=positive_int, default=16,
                        help="threads reading image headers (default: 16)")
    parser.add_argument("--max_lines", type=positive_int, default=50,
                        help="most problems quoted per set; all are counted (default: 50)")
    stats = parser.add_argument_group("box statistics and anchor coverage (as train.py's flags)")
    stats.add_argument("--min_side", type=positive_int, default=None,
                       help="resize so the short side has this length (default: train.py's)")
    stats.add_argument("--max_side", type=positive_int, default=None,
                       help="...unless the long side would exceed this (default: train.py's)")
    add_anchor_arguments(stats)
    add_assignment_arguments(stats)
    add_low_quality_argument(stats, effect="; here it changes only the report's wording")
    stats.add_argument("--output_dir", default=None,
                       help="also write {set}_box_sizes.png, the box-size histogram, into this folder (default: none)")
    args = parser.parse_args(argv)
    if iou_threshold_problem(args.positive_iou, args.negative_iou):
        parser.error(iou_threshold_problem(args.positive_iou, args.negative_iou))
    if args.min_side is not None and args.max_side is not None and args.min_side > args.max_side:
        parser.error(f"--min_side {args.min_side} is larger than --max_side {args.max_side}")
    return args


def main(argv=None):
    args = parse_args(argv)
    unusable, usable = [], []
    for set_name in args.set_name:
        report = check_dataset(args.coco_path, set_name, check_images=not args.no_images,
                               num_threads=args.num_threads)
        print(report.format(max_lines=args.max_lines), end="\n\n")
        if not report.ok:
            unusable.append(set_name)
        else:
            usable.append(report)
            print_box_statistics(args, set_name)
    if not args.no_images and check_shared_images(usable):  # an image in two sets
        for report in usable:
            if not report.ok:
                print(report.format(max_lines=args.max_lines), end="\n\n")
                unusable.append(report.set_name)
    if unusable:
        print(f"unusable sets: {', '.join(unusable)}", file=sys.stderr)
        return EXIT_UNUSABLE
    return 0


def print_box_statistics(args, set_name):
    """Print a usable set's box statistics and anchor coverage; write the histogram with --output_dir.
    torch and matplotlib are loaded only here, so that the check itself starts fast."""
    from retinanet.data.box_stats import dataset_report_lines, load_resized_boxes
    from retinanet.data.transforms import DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE
    min_side, max_side = args.min_side or DEFAULT_MIN_SIDE, args.max_side or DEFAULT_MAX_SIDE
    if min_side > max_side:
        raise SystemExit(f"error: --min_side {min_side} is larger than --max_side {max_side}")
    resized = load_resized_boxes(args.coco_path, set_name, min_side, max_side)
    lines, coverage = dataset_report_lines(resized, vars(args))
    print("\n".join(lines), end="\n\n")
    if args.output_dir and len(resized.boxes):
        from retinanet.data.box_stats_plots import box_sizes_path, plot_box_sizes
        os.makedirs(args.output_dir, exist_ok=True)
        path = box_sizes_path(args.output_dir, set_name)
        plot_box_sizes(resized, coverage, path)
        print(f"box-size histogram: {path}", end="\n\n")


def command():
    """The ``retinanet-check`` command."""
    run_script(main)


if __name__ == "__main__":
    command()
