"""Whole-evaluation speed (load, infer, decode, score): test.py's path against the baseline.

    python bench/bench_eval.py [--checkpoint_path output/<run>/model_final.pt] [--repeats 3]

Both paths run the same checkpoint on the same set (default: the synthetic val set). Prints
images per second for each run, the medians and their ratio, and the AP of each path with the
baseline capped at 100 detections per image (as COCOeval counts) and uncapped. ``ours_bf16`` is
test.py --amp (bfloat16 autocast, fast on CPUs with AVX512-BF16 or AMX).
"""
import argparse
import glob
import os
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch

import ancestor_eval
from retinanet.data.coco import CocoDetection
from retinanet.data.loader import build_loader
from retinanet.data.transforms import EvalTransform
from retinanet.detector import Detector
from retinanet.engine import DeviceConfig, evaluate
from retinanet.models.postprocess import PostProcessor


def newest_checkpoint():
    found = sorted(glob.glob(os.path.join(ROOT, "output", "*", "model_final.pt")), key=os.path.getmtime)
    if not found:
        raise SystemExit("error: no output/*/model_final.pt; run `make demo` first or pass --checkpoint_path")
    return found[-1]


def ours(model, args, min_side, max_side, amp_dtype=None):
    started = time.perf_counter()
    dataset = CocoDetection(args.coco_path, args.set_name, EvalTransform(min_side, max_side))
    loader = build_loader(dataset, batch_size=args.batch_size, workers=args.workers)
    _, evaluation = evaluate(model, loader, postprocessor=PostProcessor(0.05, 0.5, max_detections=100),
                             device_config=DeviceConfig(torch.device("cpu"), amp_dtype))
    return len(dataset) / (time.perf_counter() - started), evaluation["stats"]["AP"]


def baseline(model, args, min_side, max_side, max_detections):
    started = time.perf_counter()
    dataset = CocoDetection(args.coco_path, args.set_name, EvalTransform(min_side, max_side))
    _, stats = ancestor_eval.evaluate(model, dataset, min_side, max_side, max_detections=max_detections)
    return len(dataset) / (time.perf_counter() - started), stats["AP"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", default=None, help="default: the newest output/*/model_final.pt")
    parser.add_argument("--coco_path", default=os.path.join(ROOT, "data"))
    parser.add_argument("--set_name", default="val")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path; medians are reported")
    parser.add_argument("--batch_size", type=int, default=8, help="our path's batch size (default: 8)")
    parser.add_argument("--workers", type=int, default=2, help="our path's loader workers (default: 2)")
    args = parser.parse_args()
    checkpoint_path = args.checkpoint_path or newest_checkpoint()
    detector = Detector.from_checkpoint(checkpoint_path, "cpu")
    model, (min_side, max_side) = detector.model, (detector.transform.min_side, detector.transform.max_side)
    print(f"checkpoint {checkpoint_path}; set {args.set_name}; images {min_side}-{max_side} px; "
          f"{torch.get_num_threads()} threads")
    runs = {"ours": [], "ours_bf16": [], "baseline_cap100": [], "baseline_uncapped": []}
    aps = {}
    for repeat in range(args.repeats):
        # Interleaved, so that a slow spell of the machine hits both paths alike.
        speed, aps["ours"] = ours(model, args, min_side, max_side)
        runs["ours"].append(speed)
        speed, aps["ours_bf16"] = ours(model, args, min_side, max_side, torch.bfloat16)
        runs["ours_bf16"].append(speed)
        speed, aps["baseline_cap100"] = baseline(model, args, min_side, max_side, 100)
        runs["baseline_cap100"].append(speed)
        speed, aps["baseline_uncapped"] = baseline(model, args, min_side, max_side, None)
        runs["baseline_uncapped"].append(speed)
        print(f"run {repeat + 1}: " + ", ".join(f"{name} {values[-1]:.1f} img/s" for name, values in runs.items()))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    print("\n| path | images/s (median) | AP |\n|---|---|---|")
    for name in runs:
        print(f"| {name} | {medians[name]:.1f} | {aps[name]:.4f} |")
    for name in ("ours", "ours_bf16"):
        print(f"\n{name}: speed-up vs baseline capped at 100: {medians[name] / medians['baseline_cap100']:.2f}x; "
              f"vs uncapped: {medians[name] / medians['baseline_uncapped']:.2f}x; "
              f"AP difference vs capped baseline: {aps[name] - aps['baseline_cap100']:+.4f}")


if __name__ == "__main__":
    main()
