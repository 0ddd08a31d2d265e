"""Reproduce the real-data run on BCCD blood cells (docs/experiments.md) from its Pascal VOC folder.

    python tools/bccd_run.py [--voc_root ../shared/datasets/BCCD] [--data data_bccd] [extra train.py flags]

Converts the VOC folder with its own split files into --data (once), trains a CPU-sized
RetinaNet, runs test.py on val and test (test.py scores test too, since BCCD labels it), and
draws a few validation predictions. Extra arguments go to train.py and override the defaults.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from pipeline import run_command
from retinanet.runs.run_dir import next_run_name

# From random weights, so the documented figures reproduce offline (add --pretrained imagenet for
# the better start). Blood cells at the native 640x480 resolution: platelets are about 40 px (5% under
# 31 px), near the smallest anchor (32 px), so the images are not shrunk.
BCCD_TRAIN_FLAGS = [
    "--depth", "18", "--fpn_channels", "128", "--min_side", "480", "--max_side", "640",
    "--batch_size", "4", "--learning_rate", "3e-4", "--epochs", "15", "--milestones", "12", "14",
    "--low_quality_matches", "--pretrained", "none",
    "--eval_every", "5", "--print_every", "25",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc_root", default=os.path.join(ROOT, "..", "shared", "datasets", "BCCD"))
    parser.add_argument("--data", default="data_bccd", help="where the converted dataset goes (default: data_bccd)")
    parser.add_argument("--run_name", default=None, help="default: bccd_train_depth18_epochs15_no<next free number>")
    args, train_flags = parser.parse_known_args()
    started = time.perf_counter()
    os.chdir(ROOT)
    python = sys.executable
    if not os.path.exists(os.path.join(ROOT, args.data, "train.json")):
        run_command([python, "tools/voc_to_coco.py", "--voc_root", args.voc_root, "--output", args.data])
    run_name = args.run_name or next_run_name("output", "log", 18, 15, prefix="bccd_")
    run_dir = os.path.join("output", run_name)
    run_command([python, "train.py", "--coco_path", args.data, *BCCD_TRAIN_FLAGS, "--run_name", run_name,
                 *train_flags])
    checkpoint = os.path.join(run_dir, "model_final.pt")
    for set_name in ("val", "test"):
        run_command([python, "test.py", "--coco_path", args.data, "--checkpoint_path", checkpoint,
                     "--set_name", set_name, "--output_dir", run_dir])
    run_command([python, "vis.py", "--coco_path", args.data, "--set_name", "val", "--checkpoint_path", checkpoint,
                 "--num_images", "4", "--output_dir", os.path.join(run_dir, "vis")])
    print(f"BCCD run finished in {(time.perf_counter() - started) / 60:.1f} min; results in {run_dir}/")


if __name__ == "__main__":
    main()
