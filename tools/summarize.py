"""Print a Markdown table of training runs, and mean/std over seeds of each repeated configuration.

    python tools/summarize.py output/
    python tools/summarize.py output/ log/ --runs 'sweep_x_*' --sort AP --csv docs/runs.csv

Paths may be run folders, folders of runs (output/), folders of logs (log/{run}.log stands
for output/{run}) or single .log files. See retinanet/runs/tables.py for the columns. A run whose
folder holds report.html is listed as a Markdown link to it.
"""
import argparse


from retinanet.runs import tables
from retinanet.util.script import run_script


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runs = parser.add_argument_group("runs")
    runs.add_argument("paths", nargs="*", default=["./output"],
                      help="run folders, output folders, log folders or .log files (default: ./output)")
    runs.add_argument("--runs", nargs="+", default=None, metavar="NAME",
                      help="only these runs (names or shell patterns such as 'sweep_x_*')")
    table = parser.add_argument_group("table")
    table.add_argument("--sort", default=None, metavar="COLUMN",
                       help="sort by this column, e.g. AP (best first), 'final loss', run (default: as found)")
    table.add_argument("--csv", default=None, metavar="FILE", help="also write the per-run rows to this CSV file")
    table.add_argument("--group_by", nargs="+", default=None, metavar="KEY",
                       help="table columns or config.json keys that define a configuration for the mean/std table "
                            "(default: every setting except the seed)")
    args = parser.parse_args(argv)
    if args.sort is not None:
        try:
            tables.resolve_column(args.sort)
        except ValueError as error:
            parser.error(f"--sort: {error}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        run_dirs = tables.select_runs(tables.find_runs(args.paths), args.runs)
        rows = tables.summary_rows(run_dirs)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}")
    if not rows:
        raise SystemExit(f"error: no runs found in {', '.join(args.paths)}")
    if args.sort:
        rows = tables.sort_rows(rows, args.sort)
    print(tables.format_report(rows, group_by=args.group_by))
    if args.csv:
        tables.write_csv(rows, args.csv)
        print(f"\nwrote {args.csv}")


if __name__ == "__main__":
    run_script(main)
