"""Train RetinaNet on a COCO-format dataset and evaluate it on the validation set.

The ``retinanet-train`` command as a script; its code and flags are in retinanet/cli/commands/train.py
(``python train.py --help``).
"""
from retinanet.cli.commands.train import main, parse_args, command

__all__ = ["main", "parse_args"]  # importable from here as before

if __name__ == "__main__":
    command()
