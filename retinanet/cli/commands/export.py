"""Export a trained detector to ONNX, checked against PyTorch.
Also installed as the ``retinanet-export`` command (``pip install .``); ``python tools/export.py`` runs the same code.

    python tools/export.py --checkpoint_path output/<run>/model_final.pt --output model.onnx
    python tools/export.py --checkpoint_path output/<run>/model_final.pt --output net.onnx --raw
    python test.py --checkpoint_path net.onnx --set_name val           # ONNX Runtime
    python vis.py --images my_photos/ --checkpoint_path net.onnx

By default the file stands alone (``retinanet/deploy/end_to_end.py``): input ``image``, a uint8
(H, W, 3) RGB image of any size; outputs ``boxes`` (D, 4) in the image's pixels, ``scores``,
``labels`` and ``category_ids``, after the resize, the network, anchors, decoding and NMS, all in
the graph (ONNX opset 20); the class names are in its metadata. Any program with ONNX Runtime
runs it (docs/deploy.md has a 20-line example). After writing, ONNX Runtime runs --num_check_images
images, resized beforehand so that the file resizes nothing, and every detection must be
PyTorch's (1e-4 in score, 0.01 px), or the export fails (exit status 1; the file is left as
*.unchecked.onnx for inspection); on the images as they are it counts the detections within 1e-4
and 0.5 px.

--raw writes the network only (images (B, 3, H, W) -> cls_logits, box_deltas; batch and image
size dynamic), which test.py, vis.py and Detector run with --backend onnxruntime or openvino,
decoding in Python with the code the PyTorch path uses: raw outputs must equal PyTorch's within
1e-4 and the detections must be the same. Needs the optional packages: pip install -e '.[deploy]'.
"""
import argparse
import os
import sys

from retinanet.cli import flags
from retinanet.data.image_io import ImageReadError
from retinanet.deploy.end_to_end import DECODING_DEFAULTS, export_end_to_end
from retinanet.deploy.export import ExportCheckError, export_checkpoint, generated_images, read_images_for_check
from retinanet.deploy.extras import MissingExtraError
from retinanet.cli import options
from retinanet.models.checkpoint import CheckpointError
from retinanet.util.script import run_script


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="a checkpoint written by train.py")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--check_images", nargs="+", default=None, metavar="PATH",
                        help="image files or folders to check the export on (default: generated images)")
    parser.add_argument("--num_check_images", type=flags.positive_int, default=4,
                        help="images to check on (default: 4)")
    parser.add_argument("--raw", action="store_true",
                        help="write the network only (raw outputs, decoded in Python), the file test.py, vis.py "
                             "and Detector run with --backend onnxruntime / openvino")
    group = parser.add_argument_group("decoding in the end-to-end file (fixed when it is written)")
    group.add_argument("--score_threshold", type=flags.unit_interval, default=DECODING_DEFAULTS["score_threshold"],
                       help=f"keep scores above this (default: {DECODING_DEFAULTS['score_threshold']})")
    group.add_argument("--nms_iou", type=flags.unit_interval, default=DECODING_DEFAULTS["nms_iou"],
                       help=f"NMS IoU threshold (default: {DECODING_DEFAULTS['nms_iou']})")
    group.add_argument("--max_detections", type=flags.positive_int, default=DECODING_DEFAULTS["max_detections"],
                       help=f"detections kept per image (default: {DECODING_DEFAULTS['max_detections']})")
    args = parser.parse_args(argv)
    options.check_existing_file(parser, args.checkpoint_path, "--checkpoint_path")
    if not args.output.lower().endswith(".onnx"):
        parser.error(f"--output {args.output}: name it *.onnx (the scripts recognise exported files by it)")
    options.check_output_file(parser, args.output, "--output")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    try:
        images = (read_images_for_check(args.check_images, args.num_check_images) if args.check_images
                  else generated_images(args.num_check_images))
        if args.raw:
            export_checkpoint(args.checkpoint_path, args.output, images)
        else:
            export_end_to_end(args.checkpoint_path, args.output, images, decoding={
                "score_threshold": args.score_threshold, "nms_iou": args.nms_iou,
                "max_detections": args.max_detections})
    except (CheckpointError, MissingExtraError, ImageReadError, ValueError, OSError) as error:
        options.fail(error)
    except ExportCheckError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1)


def command():
    """The ``retinanet-export`` command."""
    run_script(main)


if __name__ == "__main__":
    command()
