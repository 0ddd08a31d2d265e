"""Draw ground truth and predictions to PNG files (headless).
Also installed as the ``retinanet-vis`` command (``pip install .``); ``python vis.py`` runs the same code.

    python vis.py --set_name val --checkpoint_path output/<run>/model_final.pt --num_images 8
    python vis.py --set_name val --results val_bbox_results.json --image_ids 3 17
    python vis.py --coco_path path/to/roboflow_export --set_name valid --checkpoint_path output/<run>/model_final.pt
    python vis.py --images my_photos/ --checkpoint_path output/<run>/model_final.pt
    python vis.py --images my_photos/ --checkpoint_path output/<run>/model_final.pt --backend onnxruntime

Ground truth is drawn in green, predictions in red with their scores. The set is found under
--coco_path in any layout train.py reads (retinanet/data/layout.py), or read from --set_json (and
--set_images) for any other layout. With --images, any image files are run through the
checkpoint (class names come from the checkpoint) and their predictions are also written as a
COCO-style results JSON.

Predictions are drawn from --score_threshold up. Without that flag, the best-F1 threshold of the
--set_name's analysis (``{set}_analysis.json``, written by test.py or tools/analyze.py) is used
when the folder of --results, or else of --checkpoint_path, holds one (the line saying so names
the file); otherwise 0.5.

Inputs are checked before anything is drawn, and any problem ends the run with exit status 2
and a message naming the file: the set gets the dataset check train.py runs, a --results file
the checks of test_submission.py (every entry with an image and category of the set, a box of
four finite numbers and a score in [0, 1]), and every --images file must be a complete image
before the model runs. An empty, truncated or corrupt image is reported with the reason rather
than skipped, so what is drawn is always everything that was asked for.
"""
import argparse
import os
import random

from retinanet.cli import deploy as deploy_cli
from retinanet.cli import flags, options
from retinanet.data.coco import CocoDetection
from retinanet.data.image_io import ImageReadError, load_image_rgb, verify_image_file
from retinanet.data.loader import ImageFiles, build_loader, list_images
from retinanet.data.transforms import EvalTransform
from retinanet.evaluation.analysis import DEFAULT_SCORE_THRESHOLD
from retinanet.evaluation.analysis import find_best_threshold
from retinanet.evaluation.results_check import SubmissionError, check_results, load_results_file
from retinanet.models.box_coding import xyxy_to_xywh
from retinanet.models.postprocess import PostProcessor
from retinanet.util.io import ensure_writable_folder, write_json
from retinanet.util.script import run_script
from retinanet.visualize import draw_detections, grid, save_png

# Predictions are decoded down to this score (what test.py writes), then drawn from --score_threshold up.
DECODE_THRESHOLD = 0.05


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[options.device_parent(inference=True), options.decoding_parent(),
                                              deploy_cli.backend_parent(), options.set_files_parent()])
    parser.set_defaults(score_threshold=None)
    source = parser.add_argument_group("what to draw")
    source.add_argument("--coco_path", default="./data",
                        help="dataset root, in any layout train.py reads (default: ./data)")
    source.add_argument("--set_name", default="val", help="set whose images and ground truth to draw (default: val)")
    source.add_argument("--images", nargs="+", default=None, metavar="PATH",
                        help="image files or folders outside any COCO set (needs --checkpoint_path)")
    source.add_argument("--results", default=None, help="a COCO results JSON with predictions to draw")
    source.add_argument("--checkpoint_path", default=None,
                        help="predict with this checkpoint (or a .onnx file written by tools/export.py) instead of "
                             "--results")
    source.add_argument("--image_ids", type=int, nargs="+", default=None, help="COCO image ids to draw")
    source.add_argument("--num_images", type=flags.positive_int, default=8,
                        help="otherwise draw this many random images (default: 8)")
    source.add_argument("--seed", type=int, default=3407, help="seed for choosing random images (default: 3407)")
    source.add_argument("--batch_size", type=flags.positive_int, default=4,
                        help="images per batch when predicting (default: 4)")
    drawing = parser.add_argument_group("drawing (--score_threshold: draw predictions scoring at least this; "
                                        "default: the best-F1 threshold of {set}_analysis.json beside --results "
                                        "or --checkpoint_path, else 0.5)")
    drawing.add_argument("--layout", default="side", choices=("side", "overlay"),
                         help="ground truth and predictions side by side, or on one picture (default: side)")
    drawing.add_argument("--grid", action="store_true", help="tile all pictures into one grid.png")
    drawing.add_argument("--output_dir", default="./output/vis", help="where PNGs go (default: ./output/vis)")
    args = parser.parse_args(argv)
    args.workers = options.inference_workers(args.workers, args.device)
    if args.images and not args.checkpoint_path:
        parser.error("--images needs --checkpoint_path")
    for flag in ("results", "checkpoint_path", "set_json"):
        options.check_existing_file(parser, getattr(args, flag), f"--{flag}")
    if args.set_images is not None:
        options.check_existing_dir(parser, args.set_images, "--set_images")
    options.check_output_folder(parser, args.output_dir, "--output_dir")
    return args


def choose_score_threshold(args):
    """--score_threshold, else the best-F1 threshold of an analysis beside --results or
    --checkpoint_path (in that order), else DEFAULT_SCORE_THRESHOLD (0.5)."""
    if args.score_threshold is not None:
        return args.score_threshold
    folders = [os.path.dirname(os.path.abspath(path)) if path else None
               for path in (args.results, args.checkpoint_path)]
    try:
        found = find_best_threshold(args.set_name, folders)
    except ValueError as error:
        options.fail(error)
    if found is None:
        return DEFAULT_SCORE_THRESHOLD
    print(f"score threshold {found[0]:.3f}: the best F1 in {found[1]} (--score_threshold overrides it)")
    return found[0]


def readable_images(paths):
    """The image files of ``paths`` (folders expanded), each checked to be a complete image."""
    try:
        files = list_images(paths)
    except ValueError as error:
        options.fail(error)
    unreadable = []
    for path in files:
        try:
            verify_image_file(path)
        except ImageReadError as error:
            unreadable.append(str(error))
    if unreadable:
        options.fail(f"{len(unreadable)} of {len(files)} --images cannot be read:\n  " + "\n  ".join(unreadable))
    return files


def predict_files(args):
    """Predictions for plain image files, written to predictions.json. Returns (items, results, names)."""
    files = readable_images(args.images)
    detector = deploy_cli.load_detector_or_exit(args)
    loader = build_loader(ImageFiles(files, detector.transform), batch_size=args.batch_size, workers=args.workers)
    postprocessor = PostProcessor(min(args.score_threshold, DECODE_THRESHOLD), args.nms_iou,
                                  max_detections=args.max_detections)
    results = detector.predict_loader(loader, postprocessor)
    for entry in results:
        entry["file_name"] = files[entry["image_id"] - 1]
    results_path = os.path.join(args.output_dir, "predictions.json")
    write_json(results_path, results, indent=None)
    print(f"{len(results)} detections -> {results_path}")
    items = [(path, index + 1, None) for index, path in enumerate(files)]
    return items, results, dict(zip(detector.category_ids, detector.class_names))


def choose_image_ids(dataset, args):
    ids = [info["id"] for info in dataset.images]
    if args.image_ids:
        unknown = [image_id for image_id in args.image_ids if image_id not in set(ids)]
        if unknown:
            options.fail(f"image ids {unknown} are not in {dataset.json_path}")
        return list(args.image_ids)
    return sorted(random.Random(args.seed).sample(sorted(ids), min(args.num_images, len(ids))))


def dataset_predictions(args):
    """Ground truth of the chosen images and their predictions (checkpoint or results file)."""
    options.check_set_or_exit(args.coco_path, args.set_name, args.set_json, args.set_images)
    detector = deploy_cli.load_detector_or_exit(args) if args.checkpoint_path else None
    transform = detector.transform if detector else EvalTransform()
    dataset = CocoDetection(args.coco_path, args.set_name, transform, json_path=args.set_json,
                            image_dir=args.set_images)
    results = load_checked_results(args.results, dataset) if args.results and detector is None else []
    dataset.restrict_to(choose_image_ids(dataset, args))
    names = dict(zip(dataset.label_to_category_id, dataset.class_names))
    if detector is not None:
        loader = build_loader(dataset, batch_size=args.batch_size, workers=args.workers)
        postprocessor = PostProcessor(min(args.score_threshold, DECODE_THRESHOLD), args.nms_iou,
                                      max_detections=args.max_detections)
        results = detector.predict_loader(loader, postprocessor)
        names = dict(zip(detector.category_ids, detector.class_names))
    items = []
    for index, info in enumerate(dataset.images):
        boxes, labels = dataset.ground_truth(index)
        ground_truth = (xyxy_to_xywh(boxes).tolist(), [dataset.class_names[label] for label in labels])
        items.append((dataset.image_path(index), info["id"], ground_truth))
    return items, results, names


def load_checked_results(path, dataset):
    """The entries of a COCO results file, checked against the set (``check_results``)."""
    try:
        results = load_results_file(path)
    except SubmissionError as error:
        options.fail(error)
    ground_truth = {"images": dataset.images,
                    "categories": [{"id": category_id} for category_id in dataset.label_to_category_id]}
    report = check_results(results, ground_truth, gt_name=os.path.basename(dataset.json_path))
    if not report.ok:
        options.fail(f"{path}: not a usable results file for {dataset.json_path}:\n{report.format()}")
    return results


def main(argv=None):
    deploy_cli.parse_and_run(parse_args, run, argv)


def picture_title(path, image_id, from_files):
    """A picture's title: the file's name, and for a dataset's image its id too."""
    name = os.path.basename(path)
    return name if from_files else f"{name} (id {image_id})"


def run(args):
    args.score_threshold = choose_score_threshold(args)
    ensure_writable_folder(args.output_dir)  # before the predictions, not after them
    items, results, names = predict_files(args) if args.images else dataset_predictions(args)
    by_image = {}
    for entry in results:
        if entry["score"] >= args.score_threshold:
            by_image.setdefault(entry["image_id"], []).append(entry)
    pictures = []
    for path, image_id, ground_truth in items:
        try:
            image = load_image_rgb(path)
        except ImageReadError as error:  # checked already, so changed or damaged since
            options.fail(error)
        pictures.append(draw_detections(image, by_image.get(image_id, []), names, ground_truth,
                                        args.layout, picture_title(path, image_id, from_files=bool(args.images))))
        if not args.grid:
            out = os.path.join(args.output_dir, f"{os.path.splitext(os.path.basename(path))[0]}_id{image_id}.png")
            save_png(out, pictures[-1])
            print(out)
    if args.grid:
        out = os.path.join(args.output_dir, "grid.png")
        save_png(out, grid(pictures))
        print(out)


def command():
    """The ``retinanet-vis`` command."""
    run_script(main)


if __name__ == "__main__":
    command()
