"""The package's layers: a module imports only from its own layer or the ones below it, and the
layers under the command line import no argparse."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "retinanet"

# Lowest first. A name is a subpackage or a top-level module of retinanet.
LAYERS = [
    {"util"},
    {"models", "data", "evaluation"},
    {"optim", "engine", "visualize", "config", "deploy", "runs"},
    {"detector", "results"},
    {"reporting", "experiments"},
    {"training"},
    {"cli"},
    {"api", "__init__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _layer(module_parts):
    return module_parts[0] if module_parts else "__init__"


def _imports(path):
    """(line, the retinanet part imported) for every import of the package in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "retinanet":
                if len(parts) == 1:  # from retinanet import config
                    for alias in node.names:
                        yield node.lineno, alias.name
                else:
                    yield node.lineno, parts[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "retinanet" and len(parts) > 1:
                    yield node.lineno, parts[1]


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    parts = {_layer(path.relative_to(PACKAGE).with_suffix("").parts) for path in _modules()}
    assert parts - set(RANK) == set()


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_its_own(path):
    own = _layer(path.relative_to(PACKAGE).with_suffix("").parts)
    upward = [f"line {line}: retinanet.{name}" for line, name in _imports(path)
              if name in RANK and RANK[name] > RANK[own]]
    assert upward == [], f"{path.relative_to(PACKAGE)} ({own}) imports from above its layer"


def test_the_layers_below_the_command_line_import_no_argparse():
    offenders = []
    for path in _modules():
        if _layer(path.relative_to(PACKAGE).with_suffix("").parts) in {"models", "data", "evaluation", "util"}:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = [alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                     for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])]
            if "argparse" in names:
                offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_no_module_of_the_package_is_over_400_lines():
    long = {str(path.relative_to(PACKAGE)): n for path in _modules()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


def test_the_package_imports_no_module_that_exists_on_posix_only():
    """Run-folder locks go through filelock, so that train.py starts on Windows too."""
    posix_only = {"fcntl", "termios", "pwd", "grp", "resource", "posix"}
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(PACKAGE)}: {name}" for name in names if name.split(".")[0] in posix_only]
    assert found == []
