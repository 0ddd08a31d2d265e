"""What the nominal anchor placement costs an imported torchvision model, with nothing downloaded.

    python bench/anchor_rule.py [--images 8] [--variant v2]

torchvision places a level's anchors every (padded side // feature-map side) pixels, the nominal
rule every 2**level. An imported COCO model was trained with torchvision's rule, so its own
detections under that rule are what it means; this measures how far the nominal rule moves them.
It builds torchvision's RetinaNet with random weights made to detect
(``models.transfer.random_torchvision_model``), imports it, and runs images of COCO's usual
sizes (short side 800, long side up to 1333; sides not divisible by 128) through both placements.
The detections of torchvision's rule (score >= 0.3, at least 1 px wide and high) serve as ground
truth; the table gives the COCO AP of each rule's detections against it, overall and for large
boxes (the levels P6 and P7 move most).
Random weights are not COCO's, so the numbers measure agreement, not accuracy on COCO.
"""
import argparse

import numpy as np
import torch

from retinanet.detector import Detector
from retinanet.engine import DeviceConfig
from retinanet.evaluation.coco_eval import evaluate_detections
from retinanet.models.checkpoint import load_model_weights
from retinanet.models.retinanet import build_model
from retinanet.models.transfer import convert_torchvision_state, random_torchvision_model

SIZES = [(800, 1067), (800, 1201), (750, 1333), (800, 800)]  # (height, width)


def detector(state, names, category_ids, options, layout):
    model = build_model(len(names), dict(options, anchor_layout="torchvision"))
    load_model_weights(model, state)
    if layout == "nominal":  # the nominal strides: what the project did before the torchvision rule
        generator = model.anchor_generator
        generator.level_strides = lambda sizes, image_size=None: [(s, s) for s in generator.strides]
    return Detector(model.eval(), names, category_ids, min_side=800, max_side=1333,
                    device_config=DeviceConfig(torch.device("cpu"), None, False))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--variant", choices=("v1", "v2"), default="v2")
    args = parser.parse_args(argv)
    state, names, category_ids, options = convert_torchvision_state(random_torchvision_model(args.variant).state_dict(),
                                                                    args.variant)
    detectors = {layout: detector(state, names, category_ids, options, layout) for layout in ("torchvision", "nominal")}
    rng = np.random.default_rng(0)
    images, annotations, results = [], [], {layout: [] for layout in detectors}
    for image_id in range(1, args.images + 1):
        height, width = SIZES[(image_id - 1) % len(SIZES)]
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id}.png"})
        found = {layout: item.predict(image, score_threshold=0.05) for layout, item in detectors.items()}
        for layout, detection in found.items():
            results[layout].extend(entry for entry in detection.to_coco(image_id)
                                   if min(entry["bbox"][2:]) >= 1)  # boxes clipped flat at the border: no object
        reference = found["torchvision"]
        for box, score, category in zip(reference["boxes"], reference["scores"], reference["category_ids"]):
            x1, y1, x2, y2 = (float(value) for value in box)
            if score >= 0.3 and min(x2 - x1, y2 - y1) >= 1:  # boxes clipped flat at the border match nothing
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(category),
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    ground_truth = {"images": images, "annotations": annotations,
                    "categories": [{"id": int(i), "name": name} for i, name in zip(category_ids, names)]}
    print(f"torchvision RetinaNet {args.variant}, random weights, {len(images)} images of "
          f"{', '.join(f'{w}x{h}' for h, w in SIZES)}; {len(annotations)} reference boxes (score >= 0.3)\n")
    print("| anchor placement | AP | AP50 | AP75 | AP large |\n|---|---|---|---|---|")
    for layout, entries in results.items():
        stats = evaluate_detections(ground_truth, entries, per_class=False)["stats"]
        print(f"| {layout} | {stats['AP']:.3f} | {stats['AP50']:.3f} | {stats['AP75']:.3f} | {stats['APl']:.3f} |")


if __name__ == "__main__":
    main()
