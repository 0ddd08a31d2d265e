"""Draw ground truth and predictions to PNG files (headless).

    python vis.py --set_name val --checkpoint_path output/<run>/model_final.pt --num_images 8
    python vis.py --set_name val --results val_bbox_results.json --image_ids 3 17
    python vis.py --images my_photos/ --checkpoint_path output/<run>/model_final.pt

Ground truth is drawn in green, predictions in red with their scores. With --images, any image
files are run through the checkpoint (class names come from the checkpoint) and their
predictions are also written as a COCO-style results JSON.
"""
import argparse
import json
import os
import random


from retinanet.runs import options as config
from retinanet.runs.checkpoint import CheckpointError
from retinanet.data.coco import CocoDetection
from retinanet.engine import predict
from retinanet.data.image_io import load_image_rgb
from retinanet.inference import image_files_loader, image_sizes_from, list_images, load_model
from retinanet.models.postprocess import PostProcessor
from retinanet.evaluation.results_check import SubmissionError, load_results_file
from retinanet.runs.trainer import build_loader
from retinanet.data.transforms import EvalTransform
from retinanet.visualize import (GROUND_TRUTH_COLOUR, PREDICTION_COLOUR, add_title, draw_boxes, grid,
                                 save_png, side_by_side)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[config.device_parent()])
    source = parser.add_argument_group("what to draw")
    source.add_argument("--coco_path", default="./data", help="dataset root (default: ./data)")
    source.add_argument("--set_name", default="val", help="set whose images and ground truth to draw (default: val)")
    source.add_argument("--images", nargs="+", default=None, metavar="PATH",
                        help="image files or folders outside any COCO set (needs --checkpoint_path)")
    source.add_argument("--results", default=None, help="a COCO results JSON with predictions to draw")
    source.add_argument("--checkpoint_path", default=None, help="predict with this checkpoint instead of --results")
    source.add_argument("--image_ids", type=int, nargs="+", default=None, help="COCO image ids to draw")
    source.add_argument("--num_images", type=config.positive_int, default=8,
                        help="otherwise draw this many random images (default: 8)")
    source.add_argument("--seed", type=int, default=3407, help="seed for choosing random images (default: 3407)")
    drawing = parser.add_argument_group("drawing")
    drawing.add_argument("--score_threshold", type=config.unit_interval, default=0.5,
                         help="draw predictions scoring at least this (default: 0.5)")
    drawing.add_argument("--layout", default="side", choices=("side", "overlay"),
                         help="ground truth and predictions side by side, or on one picture (default: side)")
    drawing.add_argument("--grid", action="store_true", help="tile all pictures into one grid.png")
    drawing.add_argument("--output_dir", default="./output/vis", help="where PNGs go (default: ./output/vis)")
    args = parser.parse_args(argv)
    if args.images and not args.checkpoint_path:
        parser.error("--images needs --checkpoint_path")
    for flag in ("results", "checkpoint_path"):
        config.check_existing_file(parser, getattr(args, flag), f"--{flag}")
    return args


def predictions_from_checkpoint(args, dataset=None, files=None):
    """COCO results for the chosen images, and the checkpoint's class names by category id."""
    device = config.resolve_device(args.device)
    try:
        model, checkpoint = load_model(args.checkpoint_path, device)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}")
    min_side, max_side = image_sizes_from(checkpoint)
    transform = EvalTransform(min_side, max_side)
    category_ids = checkpoint.get("category_ids") or list(range(1, len(checkpoint["class_names"]) + 1))
    if files is not None:
        loader = image_files_loader(files, transform, 4, args.workers)
    else:
        dataset.transform = transform
        loader = build_loader(dataset, 4, False, False, 0, args.workers, device)
    postprocessor = PostProcessor(min(args.score_threshold, 0.05))
    results = predict(model, postprocessor, loader, device, category_ids)
    return results, dict(zip(category_ids, checkpoint["class_names"]))


def draw_one(image, gt_boxes, gt_names, predictions, names, layout, title):
    # Lowest scores first, so the most confident box and label end up on top.
    predictions = sorted(predictions, key=lambda p: p["score"])
    boxes = [p["bbox"] for p in predictions]
    labels = [names.get(p["category_id"], str(p["category_id"])) for p in predictions]
    scores = [p["score"] for p in predictions]
    if layout == "overlay" or gt_boxes is None:
        canvas = draw_boxes(image, gt_boxes or [], gt_names or [], GROUND_TRUTH_COLOUR)
        return add_title(draw_boxes(canvas, boxes, labels, PREDICTION_COLOUR, scores), title)
    left = add_title(draw_boxes(image, gt_boxes, gt_names, GROUND_TRUTH_COLOUR), f"{title}: ground truth")
    right = add_title(draw_boxes(image, boxes, labels, PREDICTION_COLOUR, scores), f"{title}: predictions")
    return side_by_side(left, right)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.images:
        files = list_images(args.images)
        results, names = predictions_from_checkpoint(args, files=files)
        for entry in results:
            entry["file_name"] = files[entry["image_id"] - 1]
        results_path = os.path.join(args.output_dir, "predictions.json")
        with open(results_path, "w", encoding="utf-8") as handle:
            json.dump(results, handle)
        print(f"{len(results)} detections -> {results_path}")
        items = [(path, index + 1, None, None) for index, path in enumerate(files)]
    else:
        dataset = CocoDetection(args.coco_path, args.set_name, EvalTransform())
        by_id = {info["id"]: index for index, info in enumerate(dataset.images)}
        if args.image_ids:
            unknown = [i for i in args.image_ids if i not in by_id]
            if unknown:
                raise SystemExit(f"error: image ids {unknown} are not in {dataset.json_path}")
            chosen = args.image_ids
        else:
            ids = sorted(by_id)
            chosen = sorted(random.Random(args.seed).sample(ids, min(args.num_images, len(ids))))
        names = dict(zip(dataset.label_to_category_id, dataset.class_names))
        if args.checkpoint_path:
            subset = CocoDetection(args.coco_path, args.set_name, EvalTransform())
            subset.restrict_to(chosen)
            results, names = predictions_from_checkpoint(args, dataset=subset)
        elif args.results:
            try:
                results = load_results_file(args.results)
            except SubmissionError as error:
                raise SystemExit(f"error: {error}")
        else:
            results = []
        items = []
        for image_id in chosen:
            index = by_id[image_id]
            boxes, labels = dataset.ground_truth(index)
            boxes = boxes.copy()
            boxes[:, 2:] -= boxes[:, :2]
            labels = [dataset.class_names[label] for label in labels]
            items.append((dataset.image_path(index), image_id, boxes.tolist(), labels))
    by_image = {}
    for entry in results:
        if entry["score"] >= args.score_threshold:
            by_image.setdefault(entry["image_id"], []).append(entry)
    pictures = []
    for path, image_id, gt_boxes, gt_names in items:
        predictions = by_image.get(image_id, [])
        pictures.append(draw_one(load_image_rgb(path), gt_boxes, gt_names, predictions, names, args.layout,
                                 f"image {image_id}"))
        if not args.grid:
            out = os.path.join(args.output_dir, f"{os.path.splitext(os.path.basename(path))[0]}_id{image_id}.png")
            save_png(out, pictures[-1])
            print(out)
    if args.grid:
        out = os.path.join(args.output_dir, "grid.png")
        save_png(out, grid(pictures))
        print(out)


if __name__ == "__main__":
    main()
