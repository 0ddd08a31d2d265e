"""Check a COCO detection results file against a dataset split, then score it when possible.

The ``retinanet-submission`` command as a script; its code and flags are in retinanet/cli/commands/submission.py
(``python test_submission.py --help``).
"""
from retinanet.cli.commands.submission import get_args_parser, main, command

__all__ = ["get_args_parser", "main"]  # importable from here as before

if __name__ == "__main__":
    command()
