"""Check a COCO detection results file against a dataset split, then score it when possible.
Also installed as the ``retinanet-submission`` command (``pip install .``); ``python test_submission.py`` runs the same code.

    python test_submission.py --coco_path ./data --set_name val --results val_bbox_results.json
    python test_submission.py --coco_path path/to/roboflow_export --set_name valid --results valid_bbox_results.json

The ground truth is the set --set_name found under --coco_path in any layout train.py reads
(retinanet/data/layout.py), or the file --ground_truth.

Exit status: 0 the file is well-formed (and scored when the set has annotations);
1 the file has problems, all of them listed; 2 the results or ground-truth file cannot be read or found,
or the ground truth breaks the dataset check's rules for the JSON (each problem is listed).
"""
import argparse
import os
import sys

from retinanet.evaluation.coco_eval import (
    EVALUATORS,
    GroundTruthError,
    evaluate_detections,
    format_per_class_table,
    ground_truth_path,
    has_annotations,
    load_gt_json,
)
from retinanet.evaluation.results_check import DEFAULT_MAX_BYTES, SubmissionError, check_results, load_results_file


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--coco_path", default="./data",
                      help="dataset root, in any layout train.py reads (default: ./data)")
    data.add_argument("--set_name", default="val",
                      help="set to check against: val, test, train, Roboflow's valid or any set under --coco_path "
                           "(default: val)")
    data.add_argument("--ground_truth", default=None, metavar="JSON",
                      help="score against this COCO JSON instead of the set found under --coco_path (for example "
                           "the held-out labels of a test set, data/test_ground_truth.json for the synthetic data)")
    data.add_argument("--results", default=None,
                      help="COCO results JSON (default: {set_name}_bbox_results.json in the current directory)")
    checks = parser.add_argument_group("checks")
    checks.add_argument("--evaluator", default="faster", choices=EVALUATORS,
                        help="COCO scoring library: faster_coco_eval or pycocotools")
    checks.add_argument("--max_bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help="refuse results files larger than this many bytes")
    return parser


def main(args):
    results_path = args.results or f"{args.set_name}_bbox_results.json"
    try:
        gt_path = ground_truth_path(args.coco_path, args.set_name, args.ground_truth)
        gt_dict = load_gt_json(gt_path)
        results = load_results_file(results_path, max_bytes=args.max_bytes)
    except (GroundTruthError, SubmissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    report = check_results(results, gt_dict, gt_name=os.path.basename(gt_path))
    print(f"{results_path}: {report.format()}")
    if not report.ok:
        return 1
    if not has_annotations(gt_dict):
        print(f"{results_path} is well-formed; {gt_path} has no annotations, so there is nothing to score.")
        return 0

    metrics = evaluate_detections(gt_dict, results, evaluator=args.evaluator)
    print(f"\nCOCO bbox scores ({metrics['evaluator']}):")
    print("\n".join(metrics["lines"]))
    print()
    print(format_per_class_table(metrics["per_class"]))
    return 0


def command():
    """The ``retinanet-submission`` command."""
    sys.exit(main(get_args_parser().parse_args()))


if __name__ == "__main__":
    command()
