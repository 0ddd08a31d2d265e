"""Learning-rate range test: suggest a --learning_rate for a training command before running it.

    python tools/lr_find.py --coco_path ./data --depth 18 --batch_size 4 --pretrained none
    python tools/lr_find.py <train.py's flags> --start_lr 1e-6 --end_lr 1 --num_steps 300 --output out/lr.png

Takes train.py's whole command line (the run, schedule and evaluation flags have no effect), so a
training command can be tested as it is. A fresh model is trained for up to --num_steps steps at a
rate growing exponentially from --start_lr to --end_lr; the test stops early when the loss
diverges. Writes the loss-against-rate plot (--output) and the curve as JSON beside it, prints the
suggested --learning_rate and the rule behind it (retinanet/training/lr_find.py). No run folder,
checkpoint or log is written. Exit status 1 when there is no suggestion.
"""
import os
import sys

from retinanet import config
from retinanet.cli import flags
from retinanet.cli import options
from retinanet.cli.config_file import config_text
from retinanet.data.check import DatasetError
from retinanet.data.coco import DatasetLoadError
from retinanet.engine import TooManySkippedImagesError
from retinanet.training.lr_find import describe, run_range_test, write_range_test
from retinanet.training.setup import TrainingError
from retinanet.util.io import ensure_writable_folder
from retinanet.util.script import run_script

DEFAULT_OUTPUT = os.path.join("output", "lr_find", "lr_find.png")


def parse_args(argv=None):
    return _parse(argv)[0]


def _parse(argv):
    """(the flags, the names of those given on the command line)."""
    parser = options.build_train_parser(__doc__)
    test = parser.add_argument_group("learning-rate range test")
    test.add_argument("--start_lr", type=flags.positive_float, default=1e-7, help="first rate (default: 1e-7)")
    test.add_argument("--end_lr", type=flags.positive_float, default=1.0,
                      help="last rate, if the loss has not diverged before (default: 1)")
    test.add_argument("--num_steps", type=flags.int_in_range(10, 100000), default=200,
                      help="training steps from --start_lr to --end_lr (default: 200)")
    test.add_argument("--output", default=DEFAULT_OUTPUT, metavar="PNG",
                      help=f"the plot; the curve goes beside it as .json (default: {DEFAULT_OUTPUT})")
    args, typed = options.parse_train_flags(parser, argv)
    if args.resume:
        parser.error("--resume: the range test trains a new run's model; start it from a checkpoint's weights "
                     "with --init_from CHECKPOINT")
    if args.start_lr >= args.end_lr:
        parser.error(f"--start_lr {args.start_lr:g} must be lower than --end_lr {args.end_lr:g}")
    if not args.output.endswith(".png"):
        parser.error(f"--output {args.output}: must end in .png")
    options.check_output_file(parser, args.output, "--output")
    options.check_train_args(parser, args)
    args = config.resolve_training_args(args)
    if args.print_config:
        print(config_text(parser, args, typed, options.DERIVED_FLAGS), end="")
        raise SystemExit(0)
    return args, typed


def main(argv=None):
    args, typed = _parse(argv)
    ensure_writable_folder(os.path.dirname(os.path.abspath(args.output)))  # before the test, not after it
    try:
        test = run_range_test(args, args.start_lr, args.end_lr, args.num_steps, typed_flags=typed)
    except DatasetError as error:
        options.exit_with_report(error)
    except (DatasetLoadError, TooManySkippedImagesError, TrainingError) as error:
        options.fail(error)
    json_path = write_range_test(test, args.output, title=f"learning-rate range test: {args.coco_path} "
                                                          f"({args.train_set}), ResNet-{args.depth}, {args.optimizer}")
    for line in describe(test):
        print(line)
    print(f"plot: {args.output}   curve: {json_path}")
    if test.suggested_index is None:
        sys.exit(1)


if __name__ == "__main__":
    run_script(main)
