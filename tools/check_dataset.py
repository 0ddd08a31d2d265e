"""Check COCO-format dataset sets before training and print what is wrong with them.

The ``retinanet-check`` command as a script; its code and flags are in retinanet/cli/commands/check_dataset.py
(``python tools/check_dataset.py --help``).
"""
from retinanet.cli.commands.check_dataset import main, parse_args, command

__all__ = ["main", "parse_args"]  # importable from here as before

if __name__ == "__main__":
    command()
