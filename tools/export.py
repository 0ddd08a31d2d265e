"""Export a trained detector to ONNX, checked against PyTorch.

    python tools/export.py --checkpoint_path output/<run>/model_final.pt --output model.onnx
    python test.py --checkpoint_path model.onnx --set_name val           # ONNX Runtime
    python vis.py --images my_photos/ --checkpoint_path model.onnx

The file holds the network (images (B, 3, H, W) -> cls_logits, box_deltas; batch and image size
dynamic, ONNX opset 20) and, in its metadata, the class names, category ids, image sizes,
normalisation and model options; decoding runs in Python, the code the PyTorch path uses
(``retinanet/deploy/``). After writing, ONNX Runtime runs --num_check_images images batched
and one by one: raw outputs must equal PyTorch's within 1e-4 and the detections must be the
same, or the export fails (exit status 1; the file is left as *.unchecked.onnx for inspection).
Needs the optional packages: pip install -e '.[deploy]'.
"""
import argparse
import os
import sys

from retinanet.cli import flags
from retinanet.data.image_io import ImageReadError
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
        export_checkpoint(args.checkpoint_path, args.output, images)
    except (CheckpointError, MissingExtraError, ImageReadError, ValueError, OSError) as error:
        options.fail(error)
    except ExportCheckError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    run_script(main)
