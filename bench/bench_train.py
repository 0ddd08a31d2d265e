"""Training throughput against torchvision's RetinaNet, same depth, FPN, image size and batch.

    python bench/bench_train.py [--depths 18 50] [--modes whole model] [--repeats 3] [--steps 12]
        [--variants ours torchvision ours+amp torchvision+amp]

Each measurement runs in its own process (bench/train_step_worker.py); the variants alternate
so that a slow spell of the machine hits all alike. Both models use trainable BatchNorm and no
normalisation in the heads, as torchvision's RetinaNet does. "+amp" wraps the forward pass in
bfloat16 autocast (what train.py --amp does on a CPU). Prints medians of images/s with the data
pipeline included ("whole") and excluded ("model"), peak RSS of the training process, ratios
against torchvision in float32, and our step's achieved FLOP rate beside this machine's peaks.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(variant, depth, mode, args):
    impl, _, amp = variant.partition("+")
    command = [sys.executable, os.path.join(HERE, "train_step_worker.py"), "--impl", impl, "--depth", str(depth),
               "--mode", mode, "--steps", str(args.steps), "--min_side", str(args.min_side),
               "--max_side", str(args.max_side), "--batch_size", str(args.batch_size), "--workers", str(args.workers)]
    if amp:
        command.append("--amp")
    if args.device != "cpu":
        command += ["--device", args.device]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"measurement failed: {' '.join(command)}\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def best_rate(flops, function, repeats=8):
    function()
    fastest = min(_timed(function) for _ in range(repeats))
    return flops / fastest / 1e9


def _timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def machine_peaks():
    """Float32 GFLOP/s of a large matrix product and of a large 3x3 convolution (oneDNN)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x, w = torch.randn(8, 512, 64, 64), torch.randn(512, 512, 3, 3)
    with torch.no_grad():
        return {"matmul": best_rate(2 * 2048 ** 3, lambda: a @ b),
                "conv3x3": best_rate(2 * 8 * 512 * 512 * 9 * 64 * 64, lambda: F.conv2d(x, w, padding=1))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[18, 50])
    parser.add_argument("--modes", nargs="+", default=["whole", "model"], choices=("whole", "model"))
    parser.add_argument("--variants", nargs="+", default=["ours", "torchvision", "ours+amp", "torchvision+amp"],
                        choices=("ours", "torchvision", "ours+amp", "torchvision+amp"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--min_side", type=int, default=256)
    parser.add_argument("--max_side", type=int, default=320)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where to train (peak memory is then torch.cuda.max_memory_allocated)")
    args = parser.parse_args()
    peaks = machine_peaks()
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads; float32 peaks: matmul "
          f"{peaks['matmul']:.0f} GFLOP/s, 3x3 convolution {peaks['conv3x3']:.0f} GFLOP/s; images "
          f"{args.min_side}-{args.max_side} px, batch {args.batch_size}, {args.steps} timed steps, "
          f"{args.repeats} repeats", flush=True)
    rows = []
    for depth in args.depths:
        for mode in args.modes:
            samples = {variant: [] for variant in args.variants}
            for repeat in range(args.repeats):
                for variant in args.variants:
                    samples[variant].append(measure(variant, depth, mode, args))
                    last = samples[variant][-1]
                    print(f"depth {depth} {mode} {variant} run {repeat + 1}: {last['images_per_second']:.2f} img/s, "
                          f"peak RSS {last['peak_rss_mib']:.0f} MiB", flush=True)
            for variant, runs in samples.items():
                rows.append({"depth": depth, "mode": mode, "variant": variant,
                             "speed": statistics.median(r["images_per_second"] for r in runs),
                             "rss": statistics.median(r["peak_rss_mib"] for r in runs),
                             "flops": runs[0]["flops_per_step"]})
    print("\n| depth | what is timed | variant | images/s (median) | vs torchvision float32 | peak RSS |")
    print("|---|---|---|---:|---:|---:|")
    for row in rows:
        reference = next((r["speed"] for r in rows if r["depth"] == row["depth"] and r["mode"] == row["mode"]
                          and r["variant"] == "torchvision"), None)
        ratio = f"{row['speed'] / reference:.2f}x" if reference else "-"
        label = "whole step (data included)" if row["mode"] == "whole" else "model step (data excluded)"
        print(f"| {row['depth']} | {label} | {row['variant']} | {row['speed']:.2f} | {ratio} | {row['rss']:.0f} MiB |")
    for row in rows:
        if row["flops"]:
            achieved = row["flops"] / args.batch_size * row["speed"] / 1e9
            print(f"depth {row['depth']} ({row['variant']}, {row['mode']}): {row['flops'] / 1e9:.1f} GFLOP per step "
                  f"(forward + backward), {achieved:.0f} GFLOP/s achieved = {achieved / peaks['conv3x3']:.0%} of the "
                  f"3x3-convolution peak, {achieved / peaks['matmul']:.0%} of the matmul peak")


if __name__ == "__main__":
    main()
