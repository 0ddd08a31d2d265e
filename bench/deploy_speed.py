"""Whole-evaluation speed of the deployment backends (load, infer, decode, score) against the baseline.

    python bench/deploy_speed.py --checkpoint_path output/<run>/model_final.pt [--repeats 3]

Every path evaluates the same checkpoint on the same set (default: the synthetic val set,
``python tools/make_synthetic_dataset.py --output data`` makes it) through test.py's code
(``engine.evaluate``: batched loading, inference, the shared decoding, faster-coco-eval):

- ``torch_float32``: test.py --amp off; ``torch_bfloat16``: test.py --amp on;
- ``onnxruntime_float32`` / ``openvino_float32``: test.py --backend onnxruntime / openvino;
- ``onnxruntime_int8`` / ``openvino_int8``: the same with --int8 (--calibration_images training images);

and the one-image-at-a-time baseline (``bench/ancestor_eval.py``, at most 100 detections per
image, as COCOeval counts). Exports and the int8 file are made once, before any timing, beside the
checkpoint. Each repeat runs every path once, interleaved so that a slow spell of the machine hits
all alike; the table gives medians, val AP and the ratio to the baseline, as Markdown.
"""
import argparse
import os
import statistics

import torch

from bench_eval import ROOT, baseline, newest_checkpoint, ours
from retinanet.data.layout import SetNotFoundError, resolve_set
from retinanet.deploy.cache import load_exported
from retinanet.deploy.quantize import Calibration
from retinanet.detector import Detector
from retinanet.cli import options

PATHS = ("torch_float32", "torch_bfloat16", "onnxruntime_float32", "openvino_float32", "onnxruntime_int8",
         "openvino_int8", "baseline")
DESCRIPTIONS = {
    "torch_float32": "PyTorch float32 (`test.py --amp off`)",
    "torch_bfloat16": "PyTorch bfloat16 autocast (`test.py --amp on`)",
    "onnxruntime_float32": "ONNX Runtime float32 (`--backend onnxruntime`)",
    "openvino_float32": "OpenVINO float32 (`--backend openvino`)",
    "onnxruntime_int8": "ONNX Runtime int8 (`--backend onnxruntime --int8`)",
    "openvino_int8": "OpenVINO int8 (`--backend openvino --int8`)",
    "baseline": "baseline: one image at a time, at most 100 per image",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", default=None, help="default: the newest output/*/model_final.pt")
    parser.add_argument("--coco_path", default=os.path.join(ROOT, "data"), help="dataset root (default: ./data)")
    parser.add_argument("--set_name", default="val", help="set to evaluate (default: val)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path; medians are reported (default: 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs of each path first (caches, per-shape compilation; default: 1)")
    parser.add_argument("--batch_size", type=int, default=4, help="batch size of the batched paths (default: 4, test.py's)")
    parser.add_argument("--workers", type=int, default=options.inference_workers(None, "cpu"),
                        help="loader workers of the batched paths (default: test.py's on the CPU: none on 2 cores "
                             "or fewer, else the number of cores, at most 8)")
    parser.add_argument("--calibration_images", type=int, default=32,
                        help="training images calibrating int8 (default: 32)")
    parser.add_argument("--calibration_set", default="train", help="set whose images calibrate int8 (default: train)")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS, help="paths to run (default: all)")
    args = parser.parse_args()
    try:
        resolve_set(args.coco_path, args.set_name)
    except SetNotFoundError as error:
        parser.error(f"{error}; make the synthetic set with python tools/make_synthetic_dataset.py --output data, "
                     "or pass --coco_path")
    return args


def prepare(args, checkpoint_path):
    """{path name: (model, autocast dtype)} for every path but the baseline, exports and int8 files made."""
    detector = Detector.from_checkpoint(checkpoint_path, "cpu", amp="off")
    models = {"torch_float32": (detector.model, None), "torch_bfloat16": (detector.model, torch.bfloat16)}
    calibration = Calibration(args.coco_path, args.calibration_set, args.calibration_images)
    for name in args.paths:
        if name in models or name == "baseline":
            continue
        backend, precision = name.rsplit("_", 1)
        model, _ = load_exported(checkpoint_path, backend, int8=calibration if precision == "int8" else None)
        models[name] = (model, None)
    return detector, models


def main():
    args = parse_args()
    checkpoint_path = args.checkpoint_path or newest_checkpoint()
    detector, models = prepare(args, checkpoint_path)
    min_side, max_side = detector.transform.min_side, detector.transform.max_side
    print(f"checkpoint {checkpoint_path}; set {args.set_name}; images {min_side}-{max_side} px; "
          f"{torch.get_num_threads()} threads; batch {args.batch_size}, {args.workers} loader workers")
    runs, aps = {name: [] for name in args.paths}, {}
    for repeat in range(-args.warmup, args.repeats):
        for name in args.paths:
            if name == "baseline":
                speed, aps[name] = baseline(detector.model, args, min_side, max_side, 100)
            else:
                model, amp_dtype = models[name]
                speed, aps[name] = ours(model, args, min_side, max_side, amp_dtype)
            if repeat >= 0:
                runs[name].append(speed)
        if repeat >= 0:
            print(f"run {repeat + 1}: " + ", ".join(f"{name} {values[-1]:.1f} img/s" for name, values in runs.items()))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    reference = medians.get("baseline")
    print(f"\n| path | images/s (median of {args.repeats}) | val AP | vs baseline |\n|---|---:|---:|---:|")
    for name in args.paths:
        ratio = f"{medians[name] / reference:.2f}x" if reference else "-"
        print(f"| {DESCRIPTIONS[name]} | {medians[name]:.1f} | {aps[name]:.4f} | {ratio} |")
    print()
    for backend in ("onnxruntime", "openvino"):
        if f"{backend}_int8" in aps and f"{backend}_float32" in aps:
            print(f"{backend} int8 costs {aps[f'{backend}_float32'] - aps[f'{backend}_int8']:.4f} AP against float32 "
                  f"and runs {medians[f'{backend}_int8'] / medians[f'{backend}_float32']:.2f}x as fast")
    if "openvino_float32" in medians and "onnxruntime_float32" in medians:
        print(f"OpenVINO float32 runs {medians['openvino_float32'] / medians['onnxruntime_float32']:.2f}x as fast as "
              "ONNX Runtime float32")


if __name__ == "__main__":
    main()
