"""Train the same configuration several times, one run after another, over seeds and/or learning rates.

    python tools/sweep.py --seeds 1 2 3 --name sweep_x -- --coco_path ./data --depth 18 --epochs 12
    python tools/sweep.py --seeds 1 2 --learning_rates 1e-4 3e-4 --dry_run -- --epochs 12

Everything after ``--`` goes to train.py. Each run is named {name}_lr{LR}_seed{S}. At the end the
per-run table and the mean/std table of exactly these runs are printed (read from the
--output_path of the train flags, ./output by default).
"""
import argparse
import os
import shlex
import sys


from retinanet.runs import tables
from retinanet.experiments import sweep


def positive_number_text(text):
    """A learning rate kept as typed (it becomes part of the run name), checked to be a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return text


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s [options] -- [train.py flags ...]")
    grid = parser.add_argument_group("what to sweep")
    grid.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED", help="seeds to train with")
    grid.add_argument("--learning_rates", type=positive_number_text, nargs="+", default=None, metavar="LR",
                      help="learning rates to train with (default: the train flags' rate)")
    runs = parser.add_argument_group("runs")
    runs.add_argument("--name", default="sweep", help="run name prefix (default: sweep)")
    runs.add_argument("--train_script", default="train.py", help="training script to run (default: train.py)")
    runs.add_argument("--keep_going", action="store_true", help="go on with the next run when one fails")
    runs.add_argument("--dry_run", action="store_true", help="print the commands without running them")
    sweep_argv, train_flags = sweep.split_train_flags(argv)
    args = parser.parse_args(sweep_argv)
    if not args.seeds and not args.learning_rates:
        parser.error("give --seeds, --learning_rates or both")
    args.train_flags = train_flags
    try:
        args.commands = sweep.sweep_commands(train_flags, args.seeds, args.learning_rates, args.name,
                                             args.train_script)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    output_path = sweep.output_path_from_flags(args.train_flags)
    run_names = [run_name for run_name, _ in args.commands]
    try:
        sweep.check_new_runs(output_path, run_names)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    if args.dry_run:
        for _, argv in args.commands:
            print(shlex.join(argv))
        return
    if not os.path.isfile(args.train_script):
        raise SystemExit(f"error: --train_script {args.train_script}: no such file")
    try:
        failed = sweep.run_sweep(args.commands, keep_going=args.keep_going)
    except sweep.SweepRunFailed as error:
        raise SystemExit(f"error: {error}")
    print_sweep_tables(output_path, run_names)
    if failed:
        raise SystemExit(f"error: {len(failed)} of {len(run_names)} runs failed: {', '.join(failed)}")


def print_sweep_tables(output_path, run_names):
    run_dirs = [os.path.join(output_path, run_name) for run_name in run_names]
    missing = [run_dir for run_dir in run_dirs if not tables.is_run_dir(run_dir)]
    for run_dir in missing:
        print(f"note: {run_dir} has no config.json and metrics.jsonl; left out of the tables", file=sys.stderr)
    try:
        rows = tables.summary_rows([run_dir for run_dir in run_dirs if run_dir not in missing])
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}")
    if rows:
        print()
        print(tables.format_report(rows, always_aggregate=True))


if __name__ == "__main__":
    main()
