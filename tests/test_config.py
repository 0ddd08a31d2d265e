"""The typed configuration is the one declaration of train.py's options: the parser, its --help,
the resume policy and --print_config are generated from it, and they agree with it."""
import argparse
import dataclasses
import re

import pytest

from retinanet import config
from retinanet.cli import options

PARSER = options.build_train_parser()
ACTIONS = {action.dest: action for action in PARSER._actions if action.dest != "help"}
FIELDS = {field.name: (field, group) for field, group in config.options()}


_default = config.default_of


def test_the_parser_has_exactly_the_configurations_options_with_their_defaults_help_and_choices():
    assert set(ACTIONS) == set(FIELDS)
    for name, (field, group) in FIELDS.items():
        action, meta = ACTIONS[name], field.metadata
        assert action.default == _default(field), name
        assert action.help == meta["help"] and action.option_strings[0] == f"--{name}", name
        assert list(action.choices or []) == list(meta["choices"] or []), name
        assert action.nargs == (0 if meta["switch"] else meta["nargs"]), name
        section = config.section_of(field, group)
        assert any(action in parser_group._group_actions and parser_group.title == section
                   for parser_group in PARSER._action_groups), name
    assert [group.title for group in PARSER._action_groups[2:]] == list(config.SECTIONS)


@pytest.mark.parametrize("name", sorted(name for name, (field, _) in FIELDS.items()
                                        if isinstance(field.metadata["kind"], tuple)))
def test_declared_ranges_are_the_parsers(name):
    kind, *bounds = FIELDS[name][0].metadata["kind"]
    low, high = (1, bounds[0]) if kind == "side" else bounds
    parse = ACTIONS[name].type
    assert parse(str(low)) == low and parse(str(high)) == high
    for outside in (low - 1, high + 1):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(str(outside))


def test_the_default_a_help_text_states_is_the_default():
    checked = 0
    for name, (field, _) in FIELDS.items():
        stated = re.search(r"\(default: ([^;,)]+)", field.metadata["help"])
        default = _default(field)
        if stated is None or isinstance(default, (list, bool)) or default is None:
            continue
        text = stated.group(1).strip()
        if isinstance(default, (int, float)):
            if not re.fullmatch(r"[0-9.e+-]+", text):  # a rule, e.g. "the number of cores"
                continue
            assert float(text) == default, name
        else:
            assert text == default, name
        checked += 1
    assert checked >= 40


def test_the_resume_policy_comes_from_the_configuration():
    assert set(options.RESUME_POLICY) == set(FIELDS)
    assert {"epochs", "milestones", "learning_rate", "workers", "amp", "allow_changed_data"} <= options.RESUME_OVERRIDABLE
    assert options.RESUME_POLICY["depth"] == "a model option"
    assert options.RESUME_POLICY["batch_size"] == options.RESUME_POLICY["seed"] == "the batch order"
    assert options.RESUME_POLICY["min_side"] == "an image size" and options.RESUME_POLICY["rot90"] == "the augmentation"


def test_a_flat_namespace_round_trips_through_the_typed_configuration():
    args = PARSER.parse_args(["--depth", "18", "--epochs", "3", "--vflip", "--anchor_sizes", "16"])
    typed = config.TrainConfig.from_flat(vars(args))
    assert typed.model.depth == 18 and typed.schedule.epochs == 3 and typed.augment.vflip is True
    assert typed.model.anchor_sizes == [16.0, 32.0, 64.0, 128.0, 256.0]
    assert typed.flat() == vars(args)
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.model.depth = 50


def test_the_flag_table_lists_every_option_with_its_default():
    import os
    from scripts import ROOT
    text = open(os.path.join(ROOT, "docs", "flags.md"), encoding="utf-8").read()
    table = text.split("**`train.py`**", 1)[1].split("\n\n", 2)[1]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| `--")]
    listed = {}
    for row in rows:
        for flag in re.findall(r"`--([a-z0-9_]+)`", row[0]):
            listed[flag] = row[1].strip()
    missing = [name for name in FIELDS if name not in listed]
    assert missing == [], missing
    compared = 0
    for name, shown in listed.items():
        if name in FIELDS and re.fullmatch(r"[0-9][0-9.e-]*", shown):
            assert float(shown) == _default(FIELDS[name][0]), name
            compared += 1
        elif name in FIELDS and isinstance(_default(FIELDS[name][0]), str) and re.fullmatch(r"[a-z./_]+", shown):
            assert shown == _default(FIELDS[name][0]), name
            compared += 1
    assert compared >= 30
