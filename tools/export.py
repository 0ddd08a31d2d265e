"""Export a trained detector to ONNX, checked against PyTorch.

The ``retinanet-export`` command as a script; its code and flags are in retinanet/cli/commands/export.py
(``python tools/export.py --help``).
"""
from retinanet.cli.commands.export import main, command

__all__ = ["main"]  # importable from here as before

if __name__ == "__main__":
    command()
