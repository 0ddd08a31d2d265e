"""Train RetinaNet on a COCO-format dataset and evaluate it on the validation set.
Also installed as the ``retinanet-train`` command (``pip install .``); ``python train.py`` runs the same code.

    python train.py --coco_path ./data --depth 50 --epochs 20
    python train.py --coco_path path/to/roboflow_export --val_set valid
    python train.py --train_json cvat/train.json --train_images cvat/images --val_json cvat/val.json --val_images cvat/images

The sets are found under --coco_path in any known layout (retinanet/data/layout.py: ours, COCO's
own, Roboflow's) or read from --train_json / --val_json with their image folders.

Writes checkpoints, config.json, metrics.jsonl and curves.png to output/<run name>/ and the
console output to log/<run name>.log. Every flag: docs/flags.md.
"""

from retinanet import config
from retinanet.cli import options
from retinanet.cli.config_file import config_text
from retinanet.data.check import DatasetError
from retinanet.data.coco import DatasetLoadError
from retinanet.models.checkpoint import CheckpointError, check_model_description, check_resumable, load_checkpoint
from retinanet.training.setup import TrainingError
from retinanet.training.trainer import train_to_end
from retinanet.util.script import run_script


def parse_args(argv=None):
    """train.py's flags; with --resume, the run's saved flags with the allowed overrides applied."""
    return _parse(argv)[0]


def _parse(argv):
    """(flags, the --resume checkpoint or None, the names of the flags given). A resumed run restores
    its saved flags, so that `--resume PATH` alone continues it; flags given explicitly override
    them where that is safe."""
    parser = options.build_train_parser(__doc__)
    args, typed = options.parse_train_flags(parser, argv)
    checkpoint = None
    if args.resume:
        options.check_existing_file(parser, args.resume, "--resume")
        try:
            checkpoint = load_checkpoint(args.resume)
            check_model_description(checkpoint, args.resume)
            check_resumable(checkpoint, args.resume)
            args, overrides = options.restore_resumed_args(args, typed, checkpoint, args.resume)
        except (CheckpointError, ValueError) as error:
            raise SystemExit(f"error: {error}") from None
        for line in overrides:
            print(line)
    options.check_train_args(parser, args)
    args = config.resolve_training_args(args)
    if args.print_config:
        print(config_text(parser, args, typed, options.DERIVED_FLAGS), end="")
        raise SystemExit(0)
    return args, checkpoint, typed


def main(argv=None):
    args, resume_state, typed = _parse(argv)
    try:
        train_to_end(args, resume_state, typed)
    except DatasetError as error:
        options.exit_with_report(error)
    except (CheckpointError, DatasetLoadError) as error:
        options.fail(error)
    except TrainingError as error:
        raise SystemExit(f"error: {error}") from None


def command():
    """The ``retinanet-train`` command."""
    run_script(main)


if __name__ == "__main__":
    command()
