"""The analysis test.py writes, for any COCO results file: PR curves, F1 against the score
threshold, the confusion matrix with background, AP by object size.

    python tools/analyze.py --coco_path ./data --set_name val --results val_bbox_results.json --output_dir out/
    python tools/analyze.py --set_name test --ground_truth data/test_ground_truth.json --results test_bbox_results.json

Writes {set}_analysis.json and {set}_{pr_curves,f1_threshold,confusion_matrix,ap_by_size}.png to
--output_dir (see retinanet/evaluation/analysis.py for the rules). The results file gets the
checks of test_submission.py first. Exit status 2 when a file cannot be read or is unusable.
"""
import argparse
import os
import sys

from retinanet.cli.flags import unit_interval
from retinanet.evaluation.analysis import analyze_detections, summary_line
from retinanet.evaluation.analysis_plots import PLOT_NAMES, write_analysis
from retinanet.evaluation.coco_eval import GroundTruthError, ground_truth_path, has_annotations, load_gt_json
from retinanet.evaluation.results_check import SubmissionError, check_results, load_results_file
from retinanet.util.script import run_script


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--coco_path", default="./data", help="dataset root holding --set_name in any layout (default: ./data)")
    data.add_argument("--set_name", default="val", help="the set the results are for (default: val)")
    data.add_argument("--ground_truth", default=None, metavar="JSON",
                      help="score against this COCO JSON instead of --set_name under --coco_path")
    data.add_argument("--results", required=True, help="a COCO results JSON (test.py's {set}_bbox_results.json)")
    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", default=".", help="where the JSON and PNG files go (default: .)")
    output.add_argument("--score_threshold", type=unit_interval, default=None,
                        help="the confusion matrix's score threshold (default: the best-F1 threshold)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        gt_path = ground_truth_path(args.coco_path, args.set_name, args.ground_truth)
        gt_dict = load_gt_json(gt_path)
        results = load_results_file(args.results)
    except (GroundTruthError, SubmissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if not has_annotations(gt_dict):
        print(f"error: {gt_path} has no annotations: nothing to analyse against (give --ground_truth)",
              file=sys.stderr)
        raise SystemExit(2)
    report = check_results(results, gt_dict, gt_name=os.path.basename(gt_path))
    if not report.ok:
        print(f"error: {args.results}: not a usable results file for {gt_path}:\n{report.format()}", file=sys.stderr)
        raise SystemExit(2)
    analysis = analyze_detections(gt_dict, results, score_threshold=args.score_threshold)
    paths = write_analysis(analysis, args.output_dir, args.set_name,
                           source={"results": args.results, "ground_truth": gt_path})
    print(summary_line(analysis))
    print(f"analysis -> {paths['json']}")
    for name in PLOT_NAMES:
        print(paths[name])


if __name__ == "__main__":
    run_script(main)
