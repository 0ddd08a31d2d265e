"""Train one configuration several times, one run after another, over seeds and learning rates.

Each run is ``python train.py <flags> --seed S --learning_rate LR --run_name {name}_lr{LR}_seed{S}``
(the seed or learning-rate part is left out when that value is not swept). The runs land in the
``--output_path`` given in the flags (``./output`` by default), where ``retinanet.summary`` reads
them back for the tables printed at the end.
"""
import os
import shlex
import subprocess
import sys

DEFAULT_OUTPUT_PATH = "./output"


class SweepRunFailed(RuntimeError):
    """A training run of the sweep exited with a non-zero status."""


def split_train_flags(argv):
    """(sweep arguments, train.py flags): the train flags are everything after the first ``--``."""
    if "--" not in argv:
        return list(argv), []
    index = argv.index("--")
    return list(argv[:index]), list(argv[index + 1:])


def sweep_commands(train_flags, seeds=None, learning_rates=None, name="sweep", train_script="train.py",
                   python=None):
    """[(run name, argv)] for every (learning rate, seed) pair, learning rates outermost.

    seeds: integers, or None to keep train.py's seed. learning_rates: numbers as text (kept as
    typed, so ``1e-4`` names the run ``..._lr1e-4_...``), or None to keep the flags' rate.
    The flags must not set what the sweep sets: ``--run_name``, and ``--seed`` / ``--learning_rate``
    when those are swept.
    """
    if not seeds and not learning_rates:
        raise ValueError("nothing to sweep: give seeds, learning rates or both")
    owned = ["--run_name"] + (["--seed"] if seeds else []) + (["--learning_rate", "--lr"] if learning_rates else [])
    for flag in owned:
        if _flag_value(train_flags, flag) is not None or flag in train_flags:
            raise ValueError(f"the train flags set {flag}, which the sweep sets for each run; remove it")
    python = python or sys.executable
    commands = []
    for learning_rate in learning_rates or [None]:
        for seed in seeds or [None]:
            parts = [name]
            argv = [python, train_script, *train_flags]
            if learning_rate is not None:
                parts.append(f"lr{learning_rate}")
            if seed is not None:
                parts.append(f"seed{seed}")
                argv += ["--seed", str(seed)]
            if learning_rate is not None:
                argv += ["--learning_rate", str(learning_rate)]
            run_name = "_".join(parts)
            commands.append((run_name, argv + ["--run_name", run_name]))
    names = [run_name for run_name, _ in commands]
    repeated = sorted({run_name for run_name in names if names.count(run_name) > 1})
    if repeated:
        raise ValueError(f"the sweep would train {', '.join(repeated)} more than once; remove repeated values")
    return commands


def output_path_from_flags(train_flags):
    """The ``--output_path`` train.py will write to (the last one given, as argparse does)."""
    return _flag_value(train_flags, "--output_path") or DEFAULT_OUTPUT_PATH


def check_new_runs(output_path, run_names):
    """Refuse run names whose folder exists: train.py would add epochs to the old run's files."""
    existing = [os.path.join(output_path, run_name) for run_name in run_names
                if os.path.exists(os.path.join(output_path, run_name))]
    if existing:
        raise ValueError(f"{', '.join(existing)} already exist(s); choose another sweep name or move the folder")


def run_sweep(commands, keep_going=False, log=print):
    """Run the commands one after another, their output going straight to this console.

    A run that exits non-zero raises ``SweepRunFailed`` naming it, unless ``keep_going``: then
    the sweep goes on and the failed run names are returned.
    """
    failed = []
    for index, (run_name, argv) in enumerate(commands, start=1):
        log(f"[sweep {index}/{len(commands)}] {run_name}: {shlex.join(argv)}")
        sys.stdout.flush()
        completed = subprocess.run(argv)
        if completed.returncode == 0:
            continue
        how = (f"was killed by signal {-completed.returncode}" if completed.returncode < 0
               else f"exited with status {completed.returncode}")
        if not keep_going:
            raise SweepRunFailed(f"run {run_name} {how}; sweep stopped after {index - 1} of {len(commands)} "
                                 f"runs succeeded (--keep_going runs the rest)")
        log(f"[sweep] run {run_name} {how}; going on with the next run (--keep_going)")
        failed.append(run_name)
    return failed


def _flag_value(flags, flag):
    """The value of the last ``flag VALUE`` or ``flag=VALUE`` in a flag list, else None."""
    value = None
    for index, token in enumerate(flags):
        if token == flag and index + 1 < len(flags):
            value = flags[index + 1]
        elif token.startswith(flag + "="):
            value = token[len(flag) + 1:]
    return value
