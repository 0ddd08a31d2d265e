"""Overlay the training curves of several runs in one PNG: a loss (left) and a validation metric (right).

    python tools/plot_runs.py --runs output/runA output/runB --output docs/compare.png
    python tools/plot_runs.py --runs output/ --names 'sweep_x_*' --metric AP50 --output docs/sweep_x.png
"""
import argparse


from retinanet.evaluation.coco_eval import COCO_STAT_NAMES
from retinanet.runs import tables
from retinanet.runs.plots import LOSS_KEYS, plot_runs_overlay
from retinanet.util.script import run_script


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runs = parser.add_argument_group("runs")
    runs.add_argument("--runs", nargs="+", required=True, metavar="PATH",
                      help="run folders, output folders, log folders or .log files")
    runs.add_argument("--names", nargs="+", default=None, metavar="NAME",
                      help="only the runs with these names or shell patterns (default: all found)")
    plot = parser.add_argument_group("plot")
    plot.add_argument("--output", required=True, metavar="PNG", help="PNG file to write")
    plot.add_argument("--metric", default="AP", choices=LOSS_KEYS + COCO_STAT_NAMES,
                      help="a COCO metric for the right panel, or a loss for the left panel (default: AP)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        run_dirs = tables.select_runs(tables.find_runs(args.runs), args.names)
        runs = {run["name"]: run["records"] for run in map(tables.load_run, run_dirs)}
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}")
    if not runs:
        raise SystemExit(f"error: no runs found in {', '.join(args.runs)}")
    plot_runs_overlay(runs, args.output, metric=args.metric)
    print(f"wrote {args.output} ({len(runs)} runs)")


if __name__ == "__main__":
    run_script(main)
