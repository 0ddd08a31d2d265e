"""The end-to-end ONNX file against Detector on a whole set: how many detections match, and the AP of each.

    python bench/end_to_end_onnx.py [--checkpoint_path output/<run>/model_final.pt] [--coco_path data --set_name val]

Exports the checkpoint end to end (``tools/export.py``'s default) into a temporary folder, then
runs every image of the set, one at a time, through ``Detector`` (PyTorch, float32) and through
the file with ONNX Runtime. A detection of Detector matches when the file has one of the same
class with the score within 1e-4 and every corner within 0.5 px; the table gives the matches,
the images whose detections all match, and COCO AP / AP50 of both against the set's ground truth.
"""
import argparse
import os
import sys
import tempfile

import torch

from bench_eval import newest_checkpoint
from retinanet.data.coco import CocoDetection
from retinanet.data.image_io import load_image_rgb
from retinanet.deploy.end_to_end import (MATCH_BOX_PX, MATCH_SCORE, EndToEndSession, export_end_to_end,
                                         matched_detections)
from retinanet.detector import Detector
from retinanet.engine import detections_to_coco
from retinanet.evaluation.coco_eval import evaluate_detections


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", default=None, help="default: the newest output/*/model_final.pt")
    parser.add_argument("--coco_path", default="data")
    parser.add_argument("--set_name", default="val")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    checkpoint = args.checkpoint_path or newest_checkpoint()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    detector = Detector.from_checkpoint(checkpoint, device="cpu", amp="off")
    dataset = CocoDetection(args.coco_path, args.set_name, transform=None)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        export_end_to_end(checkpoint, path, log=lambda line: print(line, file=sys.stderr))
        session = EndToEndSession(path)
        matched = total = whole_images = 0
        results = {"Detector (PyTorch float32)": [], "end-to-end ONNX (ONNX Runtime)": []}
        for index in range(len(dataset)):
            image = load_image_rgb(dataset.image_path(index))
            want = detector.predict(image, score_threshold=0.05)  # the file's threshold
            got = session.detect(image)
            want_arrays = {"boxes": want["boxes"], "scores": want["scores"], "labels": want["labels"]}
            found = matched_detections(want_arrays, got)
            matched, total = matched + found, total + len(want["scores"])
            whole_images += found == len(want["scores"]) == len(got["scores"])
            image_id = dataset.images[index]["id"]
            for name, detection in zip(results, (want, got)):
                tensors = {key: torch.as_tensor(detection[key]) for key in ("boxes", "scores", "labels")}
                results[name].extend(detections_to_coco(tensors, image_id, dataset.label_to_category_id))
    print(f"{os.path.relpath(checkpoint)} on {args.coco_path}/{args.set_name}: {len(dataset)} images\n")
    print(f"detections of Detector matched by the file (same class, score within {MATCH_SCORE:g}, corners within "
          f"{MATCH_BOX_PX:g} px): {matched} of {total} ({100 * matched / max(total, 1):.1f}%); images whose detections "
          f"all match: {whole_images} of {len(dataset)}\n")
    print("| path | AP | AP50 |\n|---|---|---|")
    for name, entries in results.items():
        stats = evaluate_detections(dataset.json_path, entries, per_class=False)["stats"]
        print(f"| {name} | {stats['AP']:.4f} | {stats['AP50']:.4f} |")


if __name__ == "__main__":
    main()
