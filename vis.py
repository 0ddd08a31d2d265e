"""Draw ground truth and predictions to PNG files (headless).

The ``retinanet-vis`` command as a script; its code and flags are in retinanet/cli/commands/vis.py
(``python vis.py --help``).
"""
from retinanet.cli.commands.vis import main, parse_args, picture_title, command

__all__ = ["main", "parse_args", "picture_title"]  # importable from here as before

if __name__ == "__main__":
    command()
