"""``--config FILE`` and ``--print_config``: a run's flags in a YAML or JSON file.

A configuration file is a mapping of flag names (as ``--help`` spells them, without the dashes)
to values, in YAML or JSON (JSON is YAML), for example::

    depth: 18
    epochs: 12
    learning_rate: 2.0e-4
    milestones: [10]
    coco_path: data_bccd

Its values become the parser's defaults, so flags on the command line override them. Each value
goes through its flag's own type and range checks, and a key that is no flag is refused with the
file named. A run's own ``config.json`` is a valid file: what train.py records besides the flags
(``RECORDED_KEYS``: the class names, the precision it settled on, the training set's hash...) is
skipped, and so are its ``run_name`` and ``resume``, so that ``--config output/<run>/config.json``
trains the same configuration again as a new run. ``--print_config`` prints the resolved flags in
this format.
"""
import argparse
import difflib

from retinanet.config import SavedConfigError, migrate_saved_config
from retinanet.models.retinanet import MODEL_OPTION_DEFAULTS
from retinanet.util.io import read_utf8

# What train.py writes into config.json about a run that is not a flag (the network options that
# --init_from takes from its source are derived again from the same source).
RECORDED_KEYS = frozenset({
    "class_names", "world_size", "device_used", "precision", "precision_check", "precision_fallback",
    "num_train_images", "train_data", "train_data_changes", "start", "config_version", *MODEL_OPTION_DEFAULTS})
# A run's identity, not its configuration: not taken from a run's own config.json.
RUN_IDENTITY_KEYS = ("run_name", "resume")
# Flags that say what to do with the configuration rather than being part of it.
CONTROL_FLAGS = ("config", "print_config", "resume")


class ConfigFileError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


def read_config_file(path):
    """The mapping in ``path``; ConfigFileError naming the file when it is not a YAML/JSON mapping."""
    import yaml
    try:
        values = yaml.safe_load(read_utf8(path))
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot read the configuration file ({error.strerror or error})") from None
    except ValueError as error:  # read_utf8's, naming the file
        raise ConfigFileError(str(error)) from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{path}: not valid YAML or JSON ({' '.join(str(error).split())})") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
        raise ConfigFileError(f"{path}: expected a mapping of flag names to values, found {type(values).__name__}")
    return values


def config_defaults(parser, path):
    """{destination: value} of the configuration file ``path``, each value checked by its flag's own
    type, range and choices; raises ConfigFileError naming the file, the key and the problem."""
    values = read_config_file(path)
    if "config_version" in values or is_run_record(values):  # perhaps of an older version
        try:
            values = migrate_saved_config(values, path)
        except SavedConfigError as error:
            raise ConfigFileError(str(error)) from None
    return checked_values(parser, values, path)


def is_run_record(values):
    """Whether ``values`` are a run's own config.json (train.py's record), not a hand-written file."""
    return "num_train_images" in values or "class_names" in values


def checked_values(parser, values, source):
    """``values`` ({flag name: value}, from ``source``: a file's path or a description) checked as
    ``config_defaults`` checks a file's."""
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", *CONTROL_FLAGS)}
    record = is_run_record(values)
    checked = {}
    for key, value in values.items():
        if key in CONTROL_FLAGS and not record and value not in (None, False):
            raise ConfigFileError(f"{source}: {key!r} says what to do with a configuration and cannot be part of one; "
                                  f"give --{key} on the command line")
        if key in RECORDED_KEYS or key in CONTROL_FLAGS or (record and key in RUN_IDENTITY_KEYS):
            continue
        if key not in actions:
            close = difflib.get_close_matches(key, list(actions), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigFileError(f"{source}: {key!r} is not a flag of this script{hint}")
        try:
            checked[key] = _checked_value(actions[key], value)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            raise ConfigFileError(f"{source}: {key}: {error}") from None
    return checked


def _checked_value(action, value):
    """``value`` as the flag's own parsing would give it: strings and numbers through its type."""
    if value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) and isinstance(action.default, bool):  # an on|off flag saved as a boolean
        return value
    many = action.nargs in ("*", "+") or isinstance(action.nargs, int)
    if many:
        items = value if isinstance(value, list) else [value]
        if (action.nargs == "+" and not items) or (isinstance(action.nargs, int) and len(items) != action.nargs):
            raise ValueError(f"expected {action.nargs if isinstance(action.nargs, int) else 'one or more'} "
                             f"values, got {len(items)}")
        return [_one(action, item) for item in items]
    if isinstance(value, (list, dict)):
        raise ValueError(f"expected one value, got {value!r}")
    return _one(action, value)


def _one(action, value):
    if isinstance(value, (list, dict, bool)):
        raise ValueError(f"expected a single value, got {value!r}")
    converted = action.type(str(value)) if action.type is not None else str(value)
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"{converted!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def config_text(parser, args, typed=(), derived=()):
    """The flags of ``args`` that ``parser`` defines, as YAML that ``--config`` reads back, one line
    each, sorted. A ``derived`` flag that was not ``typed`` is written with its default (derived
    again when read, so that it follows an edited --epochs or --min_side) and its resolved value as
    a comment."""
    defaults = {action.dest: action.default for action in parser._actions}
    lines = []
    for name in sorted(defaults):
        if name in ("help", *CONTROL_FLAGS) or not hasattr(args, name):
            continue
        value, comment = getattr(args, name), ""
        if name in derived and name not in typed and value != defaults[name]:
            value, comment = defaults[name], f"  # resolves to {_inline(value)}"
        lines.append(f"{name}: {_inline(value)}{comment}")
    return "\n".join(lines) + "\n"


def _inline(value):
    """``value`` as one line of YAML."""
    import yaml
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()
