"""The whole pipeline on the embedded synthetic dataset, sized for a CPU: ``make demo``.

Generates ./data if data/train.json is missing, trains a small RetinaNet, runs test.py on val
and test, checks the val results with test_submission.py, draws predictions with vis.py, and
prints the val mAP and where the pictures are. Extra arguments are passed on to train.py.
"""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from pipeline import run_command
from retinanet.runs.run_dir import next_run_name

# Sized for a 2-core CPU (docs/precision_and_speed.md): ResNet-18 with a 64-channel FPN and heads on 192-256 px
# images, GroupNorm from scratch (offline and the same on every machine), 10 epochs of the 600
# training images, the rate divided by 10 for the last two (the cool-down is worth 0.07-0.13 AP
# here); bfloat16 where the processor has it (--amp auto). Measured on 2 cores, seed 3407:
# 64 channels reach val AP 0.573 in 7.4 min of training, 96 channels 0.670 in 8.6 min, 128 (the
# previous demo) 0.504 in 9.2 min; 96 channels for 8 epochs 0.486 in 6.5 min.
DEMO_EPOCHS = 10
DEMO_TRAIN_FLAGS = [
    "--depth", "18", "--fpn_channels", "64", "--min_side", "192", "--max_side", "256",
    "--batch_size", "4", "--learning_rate", "3e-4", "--epochs", str(DEMO_EPOCHS), "--milestones", "8",
    "--eval_every", "4", "--print_every", "50", "--pretrained", "none",
]


def main():
    started = time.perf_counter()
    os.chdir(ROOT)
    python = sys.executable
    if not os.path.exists(os.path.join(ROOT, "data", "train.json")):
        run_command([python, "tools/make_synthetic_dataset.py", "--output", "data"])
    run_name = next_run_name(os.path.join(ROOT, "output"), os.path.join(ROOT, "log"), 18, DEMO_EPOCHS, prefix="demo_")
    run_dir = os.path.join("output", run_name)
    run_command([python, "train.py", *DEMO_TRAIN_FLAGS, "--run_name", run_name, *sys.argv[1:]])
    checkpoint = os.path.join(run_dir, "model_final.pt")
    for set_name in ("val", "test"):
        run_command([python, "test.py", "--checkpoint_path", checkpoint, "--set_name", set_name,
                     "--output_dir", run_dir])
    run_command([python, "test_submission.py", "--set_name", "val",
                 "--results", os.path.join(run_dir, "val_bbox_results.json")])
    # The test set's labels are held out of test.json, as in a competition; score them here.
    run_command([python, "test_submission.py", "--set_name", "test", "--ground_truth", "data/test_ground_truth.json",
                 "--results", os.path.join(run_dir, "test_bbox_results.json")])
    vis_dir = os.path.join(run_dir, "vis")
    run_command([python, "vis.py", "--set_name", "val", "--checkpoint_path", checkpoint, "--num_images", "6",
                 "--output_dir", vis_dir])
    run_command([python, "vis.py", "--set_name", "val", "--checkpoint_path", checkpoint, "--num_images", "6",
                 "--grid", "--layout", "overlay", "--output_dir", vis_dir])
    with open(os.path.join(run_dir, "val_metrics.json"), encoding="utf-8") as handle:
        stats = json.load(handle)["stats"]
    print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} min")
    print(f"val mAP@[.5:.95] = {stats['AP']:.3f}   mAP@.5 = {stats['AP50']:.3f}")
    print(f"pictures: {vis_dir}/ (grid.png shows six validation images)")
    print(f"curves: {run_dir}/curves.png   log: log/{run_name}.log")


if __name__ == "__main__":
    main()
