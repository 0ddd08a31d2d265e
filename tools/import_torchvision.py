"""Turn torchvision's COCO RetinaNet weights into a checkpoint that test.py, vis.py and Detector read.

    python tools/import_torchvision.py --weights torchvision-coco-v2 --output output/coco_v2.pt
    python tools/import_torchvision.py --weights retinanet_resnet50_fpn_coco-eeacb38b.pth --variant v1 \\
        --output output/coco_v1.pt
    python test.py --checkpoint_path output/coco_v2.pt --coco_path ./data --set_name val

--weights is a local state dict of ``retinanet_resnet50_fpn`` (v1) or ``retinanet_resnet50_fpn_v2``
(v2), or one of the names torchvision-coco-v1 / torchvision-coco-v2, taken from the torch hub cache
or downloaded into it once. The checkpoint holds the network options that make its detections
torchvision's own, the 80 COCO class names and their COCO category ids, and torchvision's image
sizes (short side 800, long side at most 1333) unless --min_side / --max_side say otherwise.
Before writing, the converted network and torchvision's own run on one 480x640 image in float32;
different anchors, or score logits or box deltas more than 1e-3 apart, write nothing.
"""
import argparse
import pickle

import torch

from retinanet.models.backbone import describe_load_error
from retinanet.models.transfer import (TORCHVISION_SOURCE_NAMES, TORCHVISION_VARIANTS, TransferError,
                                       compare_with_torchvision, convert_torchvision_state, torchvision_weights)
from retinanet.cli import options
from retinanet.models.checkpoint import atomic_torch_save, load_model_weights, CheckpointError
from retinanet.models.retinanet import build_model
from retinanet.util.downloads import DownloadError, fetch
from retinanet.util.script import run_script

# Largest difference in raw outputs (logits, deltas) from torchvision's, in float32: summation order
# alone moves them by about 1e-5.
CHECK_TOLERANCE = 1e-3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True,
                        help=f"a torchvision RetinaNet state dict file, or one of {', '.join(TORCHVISION_SOURCE_NAMES)}")
    parser.add_argument("--variant", choices=sorted(TORCHVISION_VARIANTS),
                        help="v1 (retinanet_resnet50_fpn) or v2 (retinanet_resnet50_fpn_v2); recognised from "
                             "the weights when left out, checked against them when given")
    parser.add_argument("--output", required=True, help="checkpoint file to write")
    parser.add_argument("--min_side", type=int, default=800, help="short side of the input (default: 800)")
    parser.add_argument("--max_side", type=int, default=1333, help="longest long side of the input (default: 1333)")
    parser.add_argument("--no_check", action="store_true",
                        help="skip the check against torchvision's own model (two ResNet-50 passes over a 480x640 "
                             "image in float32, a few seconds)")
    args = parser.parse_args(argv)
    options.check_output_file(parser, args.output, "--output")
    return args


def read_weights(spec, variant):
    """The state dict of --weights, and the variant its name implies (None for a file)."""
    if spec in TORCHVISION_SOURCE_NAMES:
        named = TORCHVISION_SOURCE_NAMES[spec]
        if variant is not None and variant != named:
            raise SystemExit(f"error: --weights {spec} is the {named} variant, not --variant {variant}")
        try:
            spec = fetch(torchvision_weights(named).url)
        except DownloadError as error:
            raise SystemExit(f"error: --weights {spec}: {error}") from None
    try:
        state = torch.load(spec, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"error: --weights {spec}: no such file") from None
    except pickle.UnpicklingError as error:
        raise SystemExit(f"error: {spec}: refused to load: the file holds Python objects other than tensors, or "
                         f"it is corrupt ({describe_load_error(error)})") from None
    except Exception as error:  # a damaged file fails in many ways
        raise SystemExit(f"error: {spec}: not a readable weights file ({describe_load_error(error)})") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise SystemExit(f"error: {spec}: not a state dict of tensors")
    return state, spec


def main(argv=None):
    args = parse_args(argv)
    if not 0 < args.min_side <= args.max_side:
        raise SystemExit(f"error: need 0 < --min_side <= --max_side, got {args.min_side} and {args.max_side}")
    state, path = read_weights(args.weights, args.variant)
    try:
        converted, class_names, category_ids, options = convert_torchvision_state(state, args.variant)
    except TransferError as error:
        raise SystemExit(f"error: {path}: {error}") from None
    model_args = dict(options, min_side=args.min_side, max_side=args.max_side, init_from=path)
    model = build_model(len(class_names), model_args)
    try:
        load_model_weights(model, converted, path)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None
    variant = "v2" if options["p6_from"] == "c5" else "v1"
    if not args.no_check:
        check = compare_with_torchvision(model, state, variant, category_ids)
        worst = max(check["max_score_logit_diff"], check["max_box_delta_diff"])
        print(f"checked against torchvision's own {variant} in float32 on a 480x640 image: anchors "
              f"{'identical' if check['anchors_equal'] else 'DIFFERENT'}, largest difference {worst:.2g} in score "
              "logits and box deltas")
        if not check["anchors_equal"] or worst > CHECK_TOLERANCE:
            raise SystemExit(f"error: {path}: the converted model does not compute what torchvision's does "
                             f"({check}); nothing written")
    atomic_torch_save({"model": model.state_dict(), "args": model_args, "class_names": class_names,
                       "category_ids": category_ids, "epoch": 0}, args.output)
    print(f"wrote {args.output}: torchvision's COCO RetinaNet {variant} from {path}, {len(class_names)} classes, "
          f"input {args.min_side}-{args.max_side} px")


if __name__ == "__main__":
    run_script(main)
