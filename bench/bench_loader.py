"""Is the data loader the bottleneck? Training-loader images/s per augmentation preset against the
images/s of the training step alone.

    python tools/make_synthetic_dataset.py --output data      # the default data, once
    python bench/bench_loader.py [--presets off flip light strong] [--repeats 3] [--batches 30] [--steps 10]

Loader: the training set through ``TrainAugmentation`` and ``build_loader``, as train.py builds them, with
--workers worker processes (default: train.py's) and with 0 (loading in the main process). The clock
starts after the first batch, so the workers' start-up is left out. Step: forward, loss, backward and
optimizer step (``engine.training_step``) of a ResNet-18 RetinaNet as train.py trains it by default
(frozen BatchNorm, top 3 stages trained; random weights, which run as fast as ImageNet ones), on
batches of the same preset loaded beforehand, so no data loading is timed. Each figure is the median
of --repeats; the presets alternate within a repeat so that a slow spell of the machine hits all alike.

The table's ratio is loader images/s over step images/s: under 1, the step would wait for data. On a
CPU the workers and the step share the cores, so there the ratio is an upper bound.
"""
import argparse
import itertools
import os
import statistics
import time

import torch

from retinanet import config
from retinanet.cli import flags
from retinanet.cli import options
from retinanet.data.augment import AUGMENT_CHOICES, TrainAugmentation
from retinanet.data.coco import CocoDetection
from retinanet.data.loader import build_loader
from retinanet.engine import DeviceConfig, training_step
from retinanet.models.backbone import freeze_stages
from retinanet.models.loss import RetinaNetLoss
from retinanet.models.retinanet import build_model
from retinanet.util.device import AMP_CHOICES, choose_precision, resolve_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    train_defaults = options.build_train_parser()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco_path", default=os.path.join(ROOT, "data"), help="dataset root (default: ./data)")
    parser.add_argument("--set_name", default="train", help="set to load (default: train)")
    parser.add_argument("--presets", nargs="+", default=list(AUGMENT_CHOICES), choices=AUGMENT_CHOICES,
                        help="--augment presets to measure (default: all)")
    parser.add_argument("--repeats", type=flags.positive_int, default=3,
                        help="measurements per figure; the median is shown (default: 3)")
    parser.add_argument("--batches", type=flags.positive_int, default=30,
                        help="loader batches timed per measurement, after a first untimed one (default: 30)")
    parser.add_argument("--steps", type=flags.positive_int, default=10,
                        help="training steps timed per measurement, after 2 untimed ones (default: 10)")
    parser.add_argument("--batch_size", type=flags.positive_int, default=4, help="images per batch (default: 4)")
    parser.add_argument("--depth", type=int, default=18, help="ResNet depth of the step (default: 18)")
    parser.add_argument("--workers", type=flags.non_negative_int, default=train_defaults.get_default("workers"),
                        help="loader worker processes besides 0 (default: train.py's, "
                             f"{train_defaults.get_default('workers')} here)")
    parser.add_argument("--min_side", type=flags.positive_int, default=train_defaults.get_default("min_side"),
                        help="as train.py's --min_side (default: %(default)s)")
    parser.add_argument("--max_side", type=flags.positive_int, default=train_defaults.get_default("max_side"),
                        help="as train.py's --max_side (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="where the step runs, as train.py's --device (default: auto)")
    parser.add_argument("--amp", default="auto", choices=AMP_CHOICES, help="as train.py's --amp (default: auto)")
    parser.add_argument("--seed", type=int, default=3407, help="the loader's seed (default: 3407)")
    return parser.parse_args(argv)


def build_dataset(args, preset):
    """The training set with the preset's augmentation, as train.py would build it."""
    settings = vars(config.resolve_training_args(augment=preset, min_side=args.min_side, max_side=args.max_side))
    return CocoDetection(args.coco_path, args.set_name, TrainAugmentation.from_options(settings))


def endless(loader):
    """The loader's batches, epoch after epoch (a small set has fewer batches than are timed)."""
    for epoch in itertools.count():
        loader.batch_sampler.set_epoch(epoch)
        yield from loader


def loader_rate(dataset, args, workers):
    """Images/s of the loader alone over ``args.batches`` batches, the first batch untimed."""
    loader = build_loader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                          workers=workers)
    batches = endless(loader)
    next(batches)
    images = 0
    started = time.perf_counter()
    for _, targets, _ in itertools.islice(batches, args.batches):
        images += len(targets)
    rate = images / (time.perf_counter() - started)
    del batches, loader  # ends the worker processes before the next measurement
    return rate


def build_step(num_classes, args):
    """(model, criterion, optimizer, DeviceConfig) of train.py's default fine-tuning set-up."""
    device = resolve_device(args.device)
    amp_dtype, _ = choose_precision(device, args.amp)
    values = config.resolve_training_args(depth=args.depth, pretrained="imagenet", min_side=args.min_side,
                                           max_side=args.max_side)
    model = build_model(num_classes, values)
    freeze_stages(model.backbone, 3)
    model.to(device).train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-5)
    return model, RetinaNetLoss(), optimizer, DeviceConfig(device, amp_dtype)


def step_rate(step, batches, args):
    """Images/s of ``args.steps`` training steps over preloaded ``batches`` (device tensors), 2 untimed."""
    model, criterion, optimizer, device_config = step
    cycle = itertools.cycle(batches)

    def one_step(index):
        images, targets = next(cycle)
        training_step(model, criterion, optimizer, images, targets, device_config, None, 0.1, 1, index)
        return len(targets)

    for index in range(2):
        one_step(index)
    started = time.perf_counter()
    images = sum(one_step(index) for index in range(args.steps))
    # training_step copies the loss to the host each step, which waits for the device.
    return images / (time.perf_counter() - started)


def preload(dataset, args, device_config):
    """``args.steps`` batches of the preset (or all the set has), on the step's device."""
    loader = build_loader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed)
    return [(device_config.move(images), targets)
            for images, targets, _ in itertools.islice(endless(loader), min(args.steps, len(loader)))]


def format_table(rows, workers):
    header = (f"| preset | loader, --workers {workers} (img/s) | loader, --workers 0 (img/s) | training step (img/s) "
              f"| loader/step, --workers {workers} | loader/step, --workers 0 | loader the bottleneck? |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        ratio, ratio_zero = row["loader"] / row["step"], row["loader_zero"] / row["step"]
        verdict = "yes" if ratio < 1 else "no" if ratio_zero >= 1 else "no (yes with 0 workers)"
        lines.append(f"| {row['preset']} | {row['loader']:.1f} | {row['loader_zero']:.1f} | {row['step']:.1f} | "
                     f"{ratio:.2f} | {ratio_zero:.2f} | {verdict} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    datasets = {preset: build_dataset(args, preset) for preset in args.presets}
    step = build_step(next(iter(datasets.values())).num_classes, args)
    batches = {preset: preload(dataset, args, step[3]) for preset, dataset in datasets.items()}
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, step on {step[3].device}; "
          f"{len(next(iter(datasets.values())))} images in {args.set_name}, sides {args.min_side}-{args.max_side}, "
          f"batch {args.batch_size}, ResNet-{args.depth}; medians of {args.repeats}", flush=True)
    samples = {preset: {"loader": [], "loader_zero": [], "step": []} for preset in args.presets}
    for repeat in range(args.repeats):
        for preset, dataset in datasets.items():
            figures = samples[preset]
            figures["loader"].append(loader_rate(dataset, args, args.workers))
            figures["loader_zero"].append(loader_rate(dataset, args, 0))
            figures["step"].append(step_rate(step, batches[preset], args))
            print(f"repeat {repeat + 1} {preset}: loader {figures['loader'][-1]:.1f} img/s ({args.workers} workers), "
                  f"{figures['loader_zero'][-1]:.1f} img/s (0 workers); step {figures['step'][-1]:.1f} img/s",
                  flush=True)
    rows = [{"preset": preset, **{name: statistics.median(values) for name, values in figures.items()}}
            for preset, figures in samples.items()]
    print()
    print(format_table(rows, args.workers))


if __name__ == "__main__":
    main()
