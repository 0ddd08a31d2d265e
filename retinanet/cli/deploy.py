"""The scripts' deployment flags (--backend, --int8 and where its calibration images come from) and
the detector they load; test.py and vis.py share them."""
import argparse

from retinanet.cli import flags
from retinanet.deploy.backends import BACKEND_CHOICES
from retinanet.deploy.export import ExportCheckError
from retinanet.deploy.extras import MissingExtraError
from retinanet.deploy.metadata import ExportedModelError
from retinanet.deploy.quantize import Calibration
from retinanet.detector import Detector
from retinanet.cli import options
from retinanet.models.checkpoint import CheckpointError

DEFAULT_CALIBRATION_IMAGES = 32


def backend_parent():
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("backend (onnxruntime, openvino and --int8 need pip install -e '.[deploy]')")
    group.add_argument("--backend", default=None, choices=BACKEND_CHOICES,
                       help="torch: PyTorch; onnxruntime / openvino: the network exported to ONNX (--checkpoint_path "
                            "a .onnx file from tools/export.py, or a checkpoint exported on first use to the .onnx "
                            "file beside it), on the CPU (default: torch for a checkpoint, onnxruntime for a .onnx "
                            "file or with --int8)")
    group.add_argument("--int8", action="store_true",
                       help="run a static int8 quantisation of the exported network (made on first use, beside it), "
                            "calibrated on training images; test.py also prints its AP cost against float32")
    group.add_argument("--calibration_images", type=flags.positive_int, default=DEFAULT_CALIBRATION_IMAGES,
                       help=f"images calibrating --int8 (default: {DEFAULT_CALIBRATION_IMAGES})")
    group.add_argument("--calibration_set", default="train",
                       help="set of --coco_path, in any layout, whose images calibrate --int8 (default: train)")
    group.add_argument("--calibration_json", default=None,
                       help="or a COCO annotation file of the calibration images, read instead of --calibration_set")
    group.add_argument("--calibration_image_dir", default=None,
                       help="folder of the calibration images (default: the set's image folder, or the folder of "
                            "--calibration_json)")
    return parser


def calibration_from_args(args):
    if not args.int8:
        return None
    return Calibration(args.coco_path, args.calibration_set, args.calibration_images,
                       json_path=args.calibration_json, image_dir=args.calibration_image_dir)


def parse_and_run(parse_args, run, argv=None):
    """A detection script's main: ``run(parse_args(argv))``; an exported file whose network is not
    what its metadata says ends with its one-line error."""
    args = parse_args(argv)
    try:
        run(args)
    except ExportedModelError as error:
        options.fail(error)


def load_detector_or_exit(args, int8=True, **overrides):
    """``Detector.from_checkpoint`` with the device and backend flags (int8=False: ignore --int8).
    Anything unusable ends the run with one line and exit status 2."""
    try:
        detector = Detector.from_checkpoint(args.checkpoint_path, args.device, amp=args.amp,
                                            channels_last=args.channels_last, backend=args.backend,
                                            int8=calibration_from_args(args) if int8 else None, **overrides)
    except (CheckpointError, ValueError, MissingExtraError, ExportCheckError, ExportedModelError, OSError) as error:
        options.fail(error)
    print(f"precision: {detector.precision}")
    return detector


def int8_cost(args, loader, postprocessor, int8_stats, evaluator, **overrides):
    """Evaluate the float32 model of the same backend on ``loader`` and print what int8 costs.

    Returns {'float32_AP', 'int8_AP', 'AP_cost', 'float32_AP50', 'int8_AP50'}."""
    reference = load_detector_or_exit(args, int8=False, **overrides)
    _, evaluation = reference.evaluate(loader, postprocessor, evaluator=evaluator)
    stats = evaluation["stats"]
    cost = {"float32_AP": stats["AP"], "int8_AP": int8_stats["AP"], "AP_cost": stats["AP"] - int8_stats["AP"],
            "float32_AP50": stats["AP50"], "int8_AP50": int8_stats["AP50"]}
    print(f"int8 accuracy cost: AP {cost['int8_AP']:.4f} against {cost['float32_AP']:.4f} in float32 "
          f"({-cost['AP_cost']:+.4f}); AP50 {cost['int8_AP50']:.4f} against {cost['float32_AP50']:.4f}")
    return cost
