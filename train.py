"""Train RetinaNet on a COCO-format dataset and evaluate it on the validation set.

    python train.py --coco_path ./data --depth 50 --epochs 20

Writes checkpoints, config.json, metrics.jsonl and curves.png to output/<run name>/ and the
console output to log/<run name>.log. See README.md for every flag.
"""
import sys

from retinanet.data.check import DatasetError
from retinanet.runs import options
from retinanet.runs.checkpoint import CheckpointError, load_checkpoint
from retinanet.runs.trainer import Trainer


def parse_args(argv=None):
    parser = options.build_train_parser(__doc__)
    args = parser.parse_args(argv)
    options.check_train_args(parser, args)
    return options.resolve_training_args(args)


def main(argv=None):
    args = parse_args(argv)
    resume_state = None
    if args.resume:
        try:
            resume_state = load_checkpoint(args.resume)
        except CheckpointError as error:
            raise SystemExit(f"error: {error}")
    try:
        trainer = Trainer(args, resume_state)
    except DatasetError as error:
        print(error.report.format(), file=sys.stderr)
        raise SystemExit(2)
    try:
        trainer.fit()
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
