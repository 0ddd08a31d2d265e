"""The Python entry points above the scripts' flags: ``retinanet.train`` runs what ``python train.py``
runs with the same flags, checked by the same parser.

    import retinanet
    run_folder = retinanet.train("my_config.yaml", epochs=12)
    run_folder = retinanet.train({"coco_path": "data", "depth": 18, "epochs": 6}, learning_rate=2e-4)
"""
import os

from retinanet import config as configuration
from retinanet.cli import options
from retinanet.cli.config_file import ConfigFileError, checked_values
from retinanet.training.trainer import train_to_end


class TrainingConfigError(ValueError):
    """A configuration that train.py would refuse: the message says which flag and why."""


def train(config=None, **flags):
    """Train a new run and return its folder (``output/<run name>``).

    config: None, a YAML or JSON file of {flag: value} (a run's own ``config.json`` too, to train its
    configuration again), or such a dict. flags: flags as keywords (``epochs=12``,
    ``coco_path="data"``, ``val_set=""``), overriding ``config``. Every value is checked as the
    command line checks it; a bad one raises TrainingConfigError (a ValueError) before anything is
    written, an unusable dataset DatasetError (its ``report`` lists every problem). The run itself
    writes and logs exactly what train.py does; a problem it meets (data that does not fit, a
    loss that is not finite, a disk that is full) raises ``training.setup.TrainingError`` with the
    one-line message train.py prints, after saving what can be resumed; a stop signal ends the
    process with 130 / 143 as train.py does."""
    parser = options.build_train_parser()

    def refuse(message):
        raise TrainingConfigError(message)

    parser.error = refuse  # argparse would print the usage and exit
    try:
        values = options.config_file_values(parser, config) if config is not None else {}
        values.update(checked_values(parser, flags, "train()"))
    except ConfigFileError as error:
        raise TrainingConfigError(str(error)) from None
    parser.set_defaults(**values)
    args = parser.parse_args([])
    options.check_train_args(parser, args)
    args = configuration.resolve_training_args(args)
    return os.path.abspath(train_to_end(args, typed_flags=set(values)))
