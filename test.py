"""Run a trained checkpoint on a set, write COCO results and score them where labels exist.

The ``retinanet-test`` command as a script; its code and flags are in retinanet/cli/commands/test.py
(``python test.py --help``).
"""
from retinanet.cli.commands.test import main, parse_args, command

__all__ = ["main", "parse_args"]  # importable from here as before

if __name__ == "__main__":
    command()
