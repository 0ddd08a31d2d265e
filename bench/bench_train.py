"""Training throughput against torchvision's RetinaNet, same depth, FPN, image size and batch.

    python bench/bench_train.py [--depths 18 50] [--repeats 3] [--steps 15]

Each measurement runs in its own process (bench/train_step_worker.py); the two implementations
alternate so a slow spell of the machine hits both alike. Both use trainable BatchNorm and no
normalisation in the heads, as torchvision's RetinaNet does. Prints medians of images/s with the
data pipeline included ("whole") and excluded ("model"), peak RSS of the training process, the
ratios, and our step's achieved FLOP rate beside this machine's measured matrix-multiply peak.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(impl, depth, mode, args):
    command = [sys.executable, os.path.join(HERE, "train_step_worker.py"), "--impl", impl, "--depth", str(depth),
               "--mode", mode, "--steps", str(args.steps), "--min_side", str(args.min_side),
               "--max_side", str(args.max_side), "--batch_size", str(args.batch_size), "--workers", str(args.workers)]
    if impl == "ours" and args.channels_last:
        command.append("--channels_last")
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"measurement failed: {' '.join(command)}\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def matmul_peak_gflops(size=2048, repeats=10):
    """The best float32 matrix-multiply rate of this machine with torch's threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[18, 50])
    parser.add_argument("--modes", nargs="+", default=["whole", "model"], choices=("whole", "model"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--min_side", type=int, default=256)
    parser.add_argument("--max_side", type=int, default=320)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--channels_last", action="store_true", help="run our model in channels-last format")
    args = parser.parse_args()
    peak = matmul_peak_gflops()
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, matmul peak {peak:.0f} GFLOP/s; "
          f"images {args.min_side}-{args.max_side} px, batch {args.batch_size}, {args.steps} timed steps, "
          f"{args.repeats} repeats", flush=True)
    rows = []
    for depth in args.depths:
        for mode in args.modes:
            samples = {"ours": [], "torchvision": []}
            for repeat in range(args.repeats):
                for impl in ("ours", "torchvision"):
                    samples[impl].append(measure(impl, depth, mode, args))
                    last = samples[impl][-1]
                    print(f"depth {depth} {mode} {impl} run {repeat + 1}: {last['images_per_second']:.2f} img/s, "
                          f"peak RSS {last['peak_rss_mib']:.0f} MiB", flush=True)
            median = {impl: statistics.median(s["images_per_second"] for s in runs) for impl, runs in samples.items()}
            memory = {impl: statistics.median(s["peak_rss_mib"] for s in runs) for impl, runs in samples.items()}
            flops = samples["ours"][0]["flops_per_step"]
            rows.append((depth, mode, median, memory, flops))
    print("\n| depth | what is timed | ours img/s | torchvision img/s | ratio | ours peak RSS | torchvision peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for depth, mode, median, memory, _ in rows:
        label = "whole step (data included)" if mode == "whole" else "model step (data excluded)"
        print(f"| {depth} | {label} | {median['ours']:.2f} | {median['torchvision']:.2f} | "
              f"{median['ours'] / median['torchvision']:.2f}x | {memory['ours']:.0f} MiB | {memory['torchvision']:.0f} MiB |")
    for depth, mode, median, _, flops in rows:
        if flops:
            achieved = flops / args.batch_size * median["ours"] / 1e9
            print(f"depth {depth}: {flops / 1e9:.1f} GFLOP per step (forward + backward), achieved "
                  f"{achieved:.0f} GFLOP/s = {achieved / peak:.0%} of the {peak:.0f} GFLOP/s matmul peak")


if __name__ == "__main__":
    main()
