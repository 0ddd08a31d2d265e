"""Run a trained checkpoint on a set, write COCO results and score them where labels exist.
Also installed as the ``retinanet-test`` command (``pip install .``); ``python test.py`` runs the same code.

    python test.py --checkpoint_path output/<run>/model_final.pt --set_name val
    python test.py --checkpoint_path output/<run>/model_final.pt --coco_path path/to/roboflow_export --set_name valid
    python test.py --checkpoint_path output/<run>/model_final.pt --set_name val --set_json export/result.json

The set is found under --coco_path in any layout train.py reads (retinanet/data/layout.py), or
read from --set_json (and --set_images) for any other layout.

Writes {set}_bbox_results.json (COCO results format) and {set}_metrics.json (the 12 COCO
numbers and per-class AP) to --output_dir, and prints the 12 COCOeval lines. Where the set has
annotations it also writes the analysis beside them (retinanet/evaluation/analysis.py):
{set}_analysis.json, precision-recall curves, F1 against the score threshold, the confusion
matrix and AP by object size as {set}_*.png. The set gets the dataset check train.py runs
first; an unusable set or checkpoint ends with exit status 2.

    python test.py --checkpoint_path output/<run>/model_final.pt --backend onnxruntime [--int8]

runs the network exported to ONNX (exported on first use beside the checkpoint, or a .onnx
file from tools/export.py) through ONNX Runtime or OpenVINO; --int8 also prints its AP cost.
"""
import argparse
import os
import time

from retinanet.cli import deploy as deploy_cli
from retinanet.cli import flags, options
from retinanet.data.coco import CocoDetection
from retinanet.data.loader import build_loader
from retinanet.data.transforms import MAX_MAX_SIDE, MAX_MIN_SIDE
from retinanet.evaluation.analysis import analyze_detections, summary_line
from retinanet.evaluation.analysis_plots import PLOT_NAMES, write_analysis
from retinanet.evaluation.coco_eval import format_per_class_table, format_stats
from retinanet.models.postprocess import PostProcessor
from retinanet.util.io import ensure_writable_folder, write_json
from retinanet.util.script import run_script


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[options.device_parent(inference=True), options.decoding_parent(),
                                              deploy_cli.backend_parent(), options.set_files_parent()])
    parser.add_argument("--coco_path", default="./data",
                        help="dataset root, in any layout train.py reads (default: ./data)")
    parser.add_argument("--checkpoint_path", required=True,
                        help="a checkpoint written by train.py, or a .onnx file written by tools/export.py")
    parser.add_argument("--set_name", default="val",
                        help="set to run on: val, test or any set under --coco_path; with --set_json, the name its "
                             "output files take (default: val)")
    parser.add_argument("--output_dir", default=".", help="where the results and metrics files go (default: .)")
    parser.add_argument("--batch_size", type=flags.positive_int, default=4, help="images per batch (default: 4)")
    parser.add_argument("--depth", type=int, default=None,
                        help="optional check: fail unless the checkpoint holds a model of this depth")
    parser.add_argument("--min_side", type=flags.side_length(MAX_MIN_SIDE), default=None,
                        help="default: the training value")
    parser.add_argument("--max_side", type=flags.side_length(MAX_MAX_SIDE), default=None,
                        help="default: the training value")
    parser.add_argument("--evaluator", default="faster", choices=("faster", "pycocotools"),
                        help="COCO evaluator; both give the same numbers (default: faster)")
    args = parser.parse_args(argv)
    args.workers = options.inference_workers(args.workers, args.device)
    options.check_existing_file(parser, args.checkpoint_path, "--checkpoint_path")
    options.check_output_folder(parser, args.output_dir, "--output_dir")
    options.resolve_set_or_error(parser, args)
    return args


def main(argv=None):
    deploy_cli.parse_and_run(parse_args, run, argv)


def run(args):
    options.check_set_or_exit(args.coco_path, args.set_name, args.set_json, args.set_images)
    detector = deploy_cli.load_detector_or_exit(args, min_side=args.min_side, max_side=args.max_side,
                                                expected_depth=args.depth)
    dataset = CocoDetection(args.coco_path, args.set_name, detector.transform, skip_unreadable=True,
                            json_path=args.set_json, image_dir=args.set_images)
    if dataset.class_names != detector.class_names:
        raise SystemExit(f"error: {dataset.json_path} has classes {dataset.class_names}, but the checkpoint was "
                         f"trained on {detector.class_names}")
    ensure_writable_folder(args.output_dir)  # a full disk is found before the evaluation, not after it
    loader = build_loader(dataset, batch_size=args.batch_size, workers=args.workers)
    postprocessor = PostProcessor(args.score_threshold, args.nms_iou, max_detections=args.max_detections)
    started = time.perf_counter()
    stats = {}
    results, evaluation = detector.evaluate(loader, postprocessor, evaluator=args.evaluator, stats=stats)
    seconds = time.perf_counter() - started
    if stats["skipped_images"]:
        print(f"warning: {stats['skipped_images']} of {len(dataset)} images of {dataset.json_path} could not be "
              "decoded and were skipped (scored as images without detections)")
    results_path = os.path.join(args.output_dir, f"{args.set_name}_bbox_results.json")
    write_json(results_path, results, indent=None)
    print(f"{len(results)} detections on {len(dataset)} images in {seconds:.1f}s "
          f"({len(dataset) / max(seconds, 1e-9):.1f} images/s) -> {results_path}")
    if evaluation is None:
        print(f"{dataset.json_path} has no annotations: predictions written, nothing to score")
        return
    print(format_stats(evaluation["stats"]))
    print(format_per_class_table(evaluation["per_class"]))
    extra = {}
    if args.int8:
        extra["int8"] = deploy_cli.int8_cost(args, loader, postprocessor, evaluation["stats"], args.evaluator,
                                             min_side=args.min_side, max_side=args.max_side)
    metrics_path = os.path.join(args.output_dir, f"{args.set_name}_metrics.json")
    write_json(metrics_path, {"checkpoint": args.checkpoint_path, "set": args.set_name,
                              "skipped_images": stats["skipped_images"], **evaluation, **extra})
    print(f"metrics -> {metrics_path}")
    analysis = analyze_detections(dataset.json_path, results)
    paths = write_analysis(analysis, args.output_dir, args.set_name,
                           source={"results": results_path, "checkpoint": args.checkpoint_path})
    print(summary_line(analysis))
    print(f"analysis -> {paths['json']}, plots: {', '.join(os.path.basename(paths[name]) for name in PLOT_NAMES)}")


def command():
    """The ``retinanet-test`` command."""
    run_script(main)


if __name__ == "__main__":
    command()
