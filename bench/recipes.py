"""Recipes x datasets at a fixed training budget: the table the default recipe is chosen by.

    python bench/recipes.py                                   # every dataset, every recipe, seeds 3407 and 1
    python bench/recipes.py --datasets three_classes_16_80 small_objects --recipes defaults original_equivalent
    python bench/recipes.py --original /path/to/original/checkout   # adds the original repository's own code

Every run is ``train.py`` with the same budget, the command a user of the original repository
would type: ``--depth 18 --epochs 8 --min_side 256 --max_side 320 --batch_size 2`` (override with
``--budget``), plus the recipe's flags. Datasets are generated once into ``--work_dir`` (200
training and 40 validation images of 200-320 px, each of a different character) or converted
from BCCD. A run whose ``summary.json`` exists is not run again, so the benchmark can be
stopped and continued. The table gives the final val AP and AP50, mean and half the range over
the seeds, and the median seconds per epoch.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

from retinanet.experiments.recipes import RECIPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET = ["--depth", "18", "--epochs", "8", "--min_side", "256", "--max_side", "320", "--batch_size", "2"]
SYNTHETIC = ("three_classes_16_80", "small_objects", "crowded", "one_class", "ten_classes", "textured")
AP_LINE = re.compile(r"Average Precision\s+\(AP\) @\[ IoU=0\.50(:0\.95)?\s+\| area=\s*all \| maxDets=100 \] = (-?[\d.]+)")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(SYNTHETIC) + ["bccd"],
                        help=f"names among {', '.join(SYNTHETIC + ('bccd',))}")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), help=f"names among {', '.join(RECIPES)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3407, 1])
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="flags added to every run of ours, e.g. --extra --amp off")
    parser.add_argument("--budget", nargs="+", default=BUDGET, help="train.py flags shared by all runs")
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "output", "recipes"))
    parser.add_argument("--bccd", default=os.path.join(ROOT, "..", "shared", "datasets", "BCCD"))
    parser.add_argument("--original", default=None, metavar="DIR",
                        help="a checkout of the original course repository, laid out to run offline")
    return parser.parse_args()


def prepare_dataset(name, args):
    """The dataset's folder, generated or converted on first use."""
    path = os.path.join(args.work_dir, "data", name)
    if os.path.exists(os.path.join(path, "val.json")):
        return path
    if name == "bccd":
        command = [sys.executable, "tools/voc_to_coco.py", "--voc_root", args.bccd, "--output", path]
    else:
        command = [sys.executable, "tools/make_synthetic_dataset.py", "--output", path, "--style", name,
                   "--num_train", "200", "--num_val", "40", "--num_test", "0", "--min_size", "200",
                   "--max_size", "320", "--seed", "11"]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return path


def run_ours(data, recipe, seed, args):
    """(AP, AP50, seconds per epoch) of one train.py run, from its summary and metrics files."""
    name = f"{os.path.basename(data)}_{recipe}_seed{seed}"
    output = os.path.join(args.work_dir, "output")
    run_dir = os.path.join(output, name)
    if not os.path.exists(os.path.join(run_dir, "summary.json")):
        command = [sys.executable, "train.py", "--coco_path", data, "--pretrained", "none", *args.budget,
                   *RECIPES[recipe], "--seed", str(seed), "--eval_every", "0", "--print_every", "0",
                   "--output_path", output, "--log_dir", os.path.join(args.work_dir, "log"), "--run_name", name,
                   *args.extra]
        if os.path.exists(run_dir):  # an interrupted earlier attempt
            subprocess.run(["rm", "-rf", run_dir], check=True)
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as handle:
        coco = json.load(handle)["final_coco"]
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as handle:
        seconds = statistics.median(json.loads(line)["seconds"] for line in handle if line.strip())
    return coco["AP"], coco["AP50"], seconds


def run_original(data, seed, args):
    """(AP, AP50, seconds per epoch) of the original repository's own train.py (fp32, its evaluation)."""
    name = f"{os.path.basename(data)}_original_code_seed{seed}"
    log_path = os.path.join(args.work_dir, "log", f"{name}.log")
    epochs = args.budget[args.budget.index("--epochs") + 1]
    depth = args.budget[args.budget.index("--depth") + 1]
    if not os.path.exists(log_path) or "epoch_loss_list" not in open(log_path, encoding="utf-8").read():
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        os.makedirs(os.path.join(args.work_dir, "original_output"), exist_ok=True)  # it creates only the last level
        started = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            subprocess.run([sys.executable, "train.py", "--coco_path", os.path.abspath(data), "--depth", depth,
                            "--epochs", epochs, "--seed", str(seed), "--output_path",
                            os.path.join(args.work_dir, "original_output", name)],
                           cwd=args.original, check=True, stdout=log, stderr=subprocess.STDOUT)
            log.write(f"\nwall seconds {time.perf_counter() - started:.1f}\n")
    text = open(log_path, encoding="utf-8").read()
    values = {bool(match.group(1)): float(match.group(2)) for match in AP_LINE.finditer(text)}
    seconds = float(re.search(r"wall seconds ([\d.]+)", text).group(1)) / int(epochs)
    return values[True], values[False], seconds


def summarise(results):
    """Markdown table: one row per dataset and recipe."""
    lines = ["| dataset | recipe | seeds | val AP | AP50 | s/epoch |", "|---|---|---:|---:|---:|---:|"]
    for (dataset, recipe), runs in results.items():
        aps, ap50s, seconds = zip(*runs)
        spread = (max(aps) - min(aps)) / 2
        lines.append(f"| {dataset} | {recipe} | {len(runs)} | {statistics.fmean(aps):.3f} ± {spread:.3f} | "
                     f"{statistics.fmean(ap50s):.3f} | {statistics.median(seconds):.0f} |")
    return "\n".join(lines)


def main():
    args = parse_args()
    unknown = [recipe for recipe in args.recipes if recipe not in RECIPES and recipe != "original_code"]
    if unknown:
        raise SystemExit(f"error: unknown recipes {unknown}; choose among {', '.join(RECIPES)}, original_code")
    results = {}
    for dataset in args.datasets:
        data = prepare_dataset(dataset, args)
        recipes = list(args.recipes) + (["original_code"] if args.original else [])
        for recipe in dict.fromkeys(recipes):
            for seed in args.seeds:
                if recipe == "original_code":
                    result = run_original(data, seed, args)
                else:
                    result = run_ours(data, recipe, seed, args)
                results.setdefault((dataset, recipe), []).append(result)
                print(f"{dataset} {recipe} seed {seed}: AP {result[0]:.3f} AP50 {result[1]:.3f} "
                      f"{result[2]:.0f} s/epoch", flush=True)
    print()
    print(f"budget: {' '.join(args.budget)}" + (f"; ours also {' '.join(args.extra)}" if args.extra else ""))
    print(summarise(results))


if __name__ == "__main__":
    main()
