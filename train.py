"""Train RetinaNet on a COCO-format dataset and evaluate it on the validation set.

    python train.py --coco_path ./data --depth 50 --epochs 20

Writes checkpoints, config.json, metrics.jsonl and curves.png to output/<run name>/ and the
console output to log/<run name>.log. See README.md for every flag.
"""
import argparse
import sys


from retinanet.runs import options as config
from retinanet.runs.checkpoint import CheckpointError, load_checkpoint
from retinanet.data.check import DatasetError
from retinanet.runs.trainer import Trainer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[config.model_parent(), config.training_parent(), config.image_size_parent(),
                 config.device_parent(), config.decoding_parent()],
    )
    data = parser.add_argument_group("data")
    data.add_argument("--coco_path", default="./data", help="dataset root: {set}.json and images/{set}/ (default: ./data)")
    data.add_argument("--train_set", default="train", help="training set name (default: train)")
    data.add_argument("--val_set", default="val", help="validation set name; '' disables evaluation (default: val)")
    data.add_argument("--max_skipped_images", type=config.non_negative_int, default=10,
                      help="stop when more images than this fail to decode during training (default: 10)")
    data.add_argument("--skip_dataset_check", action="store_true",
                      help="do not validate the dataset files before training (not recommended)")
    run = parser.add_argument_group("run")
    run.add_argument("--output_path", default="./output", help="folder for run folders with checkpoints (default: ./output)")
    run.add_argument("--log_dir", default="./log", help="folder for the run's console log (default: ./log)")
    run.add_argument("--run_name", default=None,
                     help="run name (default: train_depth{D}_epochs{E}_no{N}, N the next free number)")
    run.add_argument("--seed", type=int, default=3407, help="random seed (default: 3407)")
    run.add_argument("--resume", default=None, metavar="PATH",
                     help="continue from a checkpoint (checkpoint_last.pt or checkpoint_interrupted.pt of a run)")
    run.add_argument("--eval_every", type=config.non_negative_int, default=1,
                     help="evaluate on the validation set every N epochs and at the end (default: 1; 0: only at the end)")
    run.add_argument("--eval_batch_size", type=config.positive_int, default=4,
                     help="images per batch during evaluation (default: 4)")
    run.add_argument("--save_every", type=config.non_negative_int, default=0,
                     help="also keep checkpoint_epoch{N}.pt every N epochs (default: 0, off)")
    run.add_argument("--evaluator", default="faster", choices=("faster", "pycocotools"),
                     help="COCO evaluator: faster-coco-eval or pycocotools (same numbers; default: faster)")
    run.add_argument("--print_every", type=config.non_negative_int, default=50,
                     help="log a loss line every N iterations when no progress bar is shown (default: 50)")
    run.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across processes (with --norm bn)")
    args = parser.parse_args(argv)
    config.check_image_sizes(parser, args)
    config.check_existing_dir(parser, args.coco_path, "--coco_path")
    config.check_existing_file(parser, args.resume, "--resume")
    config.check_existing_file(parser, args.pretrained, "--pretrained")
    if args.fpn_channels % 32 or (args.head_norm == "gn" and args.fpn_channels < 64):
        parser.error(f"--fpn_channels {args.fpn_channels}: must be a multiple of 32, and at least 64 with "
                     "--head_norm gn (GroupNorm's 32 groups need 2 channels each)")
    if args.milestones is None:
        args.milestones = sorted({max(1, round(args.epochs * 2 / 3)), max(1, round(args.epochs * 8 / 9))})
    if args.norm == "auto":
        args.norm = "frozen_bn" if args.pretrained else "gn"
    return args


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
