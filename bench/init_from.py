"""Fine-tuning a detector trained on other classes, against training from scratch on the same budget.

    make demo                      # trains the source: the demo's detector, on the default data
    python bench/init_from.py      # or --source output/<run>/model_final.pt

The source is a detector trained on the default synthetic data (classes ellipse, rectangle,
triangle, plus, star, ring): ``--source``, or the newest ``output/demo_*/model_final.pt``. The target is a small generated set with another class list, diamond, hexagon, star and
ring (2 of its 4 classes are the source's): 60 training and 40 validation images. train.py runs
twice on it with the same flags and seed, once with ``--init_from SOURCE`` and once from random
weights with the source's network, and the val AP of each is printed.
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import torch

from retinanet.data.synthetic import Style, generate_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TARGET_CLASSES = ("diamond", "hexagon", "star", "ring")
BUDGET = ["--epochs", "12", "--batch_size", "4", "--learning_rate", "3e-4", "--min_side", "192", "--max_side", "256",
          "--eval_every", "0", "--print_every", "0", "--seed", "3407"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="a checkpoint trained on the default data (default: the newest demo run's)")
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "output", "init_from"))
    parser.add_argument("--num_train", type=int, default=60)
    parser.add_argument("--budget", nargs="+", default=BUDGET, help="train.py flags of both runs")
    return parser.parse_args()


def train(name, flags, args):
    """The final val AP and AP50 of one train.py run (skipped when its summary exists)."""
    run_dir = os.path.join(args.work_dir, "output", name)
    if not os.path.exists(os.path.join(run_dir, "summary.json")):
        subprocess.run([sys.executable, "train.py", *flags, "--output_path", os.path.join(args.work_dir, "output"),
                        "--log_dir", os.path.join(args.work_dir, "log"), "--run_name", name], cwd=ROOT, check=True)
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as handle:
        coco = json.load(handle)["final_coco"]
    return coco["AP"], coco["AP50"]


def main():
    args = parse_args()
    source = args.source
    if source is None:
        demos = sorted(glob.glob(os.path.join(ROOT, "output", "demo_*", "model_final.pt")), key=os.path.getmtime)
        if not demos:
            raise SystemExit("error: no output/demo_*/model_final.pt: run `make demo` first, or pass --source")
        source = demos[-1]
    saved = torch.load(source, map_location="cpu", weights_only=True)["args"]
    target = os.path.join(args.work_dir, "data", "target")
    if not os.path.exists(os.path.join(target, "val.json")):
        generate_dataset(target, num_train=args.num_train, num_val=40, num_test=0, seed=5,
                         style=Style(classes=TARGET_CLASSES))
    common = ["--coco_path", target, *args.budget]
    network = ["--pretrained", "none"] + [flag for name in ("depth", "norm", "head_norm", "fpn_channels")
                                          for flag in (f"--{name}", str(saved[name]))]
    results = {"--init_from SOURCE": train("fine_tuned", [*common, "--init_from", source], args),
               "from random weights": train("scratch", [*common, *network], args)}
    print(f"\nsource: {source}; target: {args.num_train} training images of {', '.join(TARGET_CLASSES)}")
    print(f"budget: {' '.join(args.budget)}")
    print("| start | val AP | AP50 |\n|---|---:|---:|")
    for start, (ap, ap50) in results.items():
        print(f"| {start} | {ap:.3f} | {ap50:.3f} |")


if __name__ == "__main__":
    main()
